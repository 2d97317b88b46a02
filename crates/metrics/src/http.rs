//! The metrics and debug HTTP endpoint of a service: a small HTTP/1.1 server that answers
//! one GET per connection.
//!
//! * `/metrics` — Prometheus text format.
//! * `/healthz` — `ok` while the process serves (a liveness probe).
//! * `/readyz` — `ready` once the service has registered on NATS and while its connection
//!   is up, else 503 saying why (a readiness probe).
//! * `/debug/profile?seconds=N` — a CPU flamegraph (SVG) sampled over N seconds (1–120,
//!   default 10), one profile at a time.
//! * `/debug/heap` — the counting allocator's figures and /proc's, as JSON.
//! * `/debug/<name>` — reports a service adds (`Metrics::add_debug_text`), e.g. the
//!   indexer's `rocksdb` statistics.
//!
//! Requests are bounded (8 KiB of header, 5 s to send it); anything else gets a 4xx that
//! says what was wrong.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::global;

/// Where a service serves `/metrics` (flags or environment).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MetricsConfig {
    /// Address of the metrics and profiling HTTP endpoint (`/metrics`, `/healthz`,
    /// `/debug/...`), e.g. 127.0.0.1:9641 or 0.0.0.0:9641; `off` disables it. Unset: the
    /// service's default port on 127.0.0.1, skipped with a warning if that port is taken.
    #[arg(long = "metrics-addr", env = "HSYNC_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

/// The running endpoint; dropping it stops the server.
#[derive(Debug)]
pub struct MetricsServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const MAX_HEADER: usize = 8 * 1024;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

impl MetricsConfig {
    /// Starts the endpoint as configured; `default_port` is the service's own port on
    /// 127.0.0.1, used when no address is given. `Ok(None)`: switched off, or the default
    /// port is taken (another service on this machine); an address given explicitly that
    /// cannot be bound is an error.
    pub async fn start(&self, default_port: u16) -> anyhow::Result<Option<MetricsServer>> {
        let (addr, explicit) = match self.metrics_addr.as_deref().map(str::trim) {
            Some("off") | Some("") => return Ok(None),
            Some(a) => (
                a.parse::<SocketAddr>()
                    .map_err(|e| anyhow::anyhow!("HSYNC_METRICS_ADDR / --metrics-addr {a:?} is not an address like 127.0.0.1:9641 ({e})"))?,
                true,
            ),
            None => (SocketAddr::from(([127, 0, 0, 1], default_port)), false),
        };
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) if !explicit => {
                tracing::warn!("metrics endpoint off: cannot listen on the default {addr} ({e}); set HSYNC_METRICS_ADDR");
                return Ok(None);
            }
            Err(e) => anyhow::bail!("cannot serve metrics on {addr}: {e}"),
        };
        let addr = listener.local_addr()?;
        *global().http_addr.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(async move {
                            if let Err(e) = handle(stream).await {
                                tracing::debug!("metrics connection: {e}");
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors, say: wait instead of spinning.
                        tracing::warn!("metrics endpoint: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Some(MetricsServer { addr, task }))
    }
}

/// A parsed request line: method and target (path and query).
#[derive(Debug, PartialEq)]
pub(crate) struct RequestLine {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
}

pub(crate) fn parse_request_line(head: &str) -> Result<RequestLine, String> {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("not an HTTP request line: {:?}", truncate(line)));
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Err(format!("not an HTTP/1.x request line: {:?}", truncate(line)));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    Ok(RequestLine { method: method.to_string(), path: path.to_string(), query })
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn read_head(stream: &mut TcpStream) -> Result<String, (u16, String)> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(());
            }
            if buf.len() > MAX_HEADER {
                return Err((431, format!("request header over {MAX_HEADER} bytes")));
            }
            let n = stream.read(&mut chunk).await.map_err(|e| (400, e.to_string()))?;
            if n == 0 {
                return Err((400, "connection closed before the request header ended".to_string()));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    match tokio::time::timeout(HEADER_TIMEOUT, read).await {
        Err(_) => return Err((408, format!("no complete request header in {} s", HEADER_TIMEOUT.as_secs()))),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {}
    }
    String::from_utf8(buf).map_err(|_| (400, "request header is not UTF-8".to_string()))
}

async fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let head = format!("HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn handle(mut stream: TcpStream) -> std::io::Result<()> {
    let head = match read_head(&mut stream).await {
        Ok(h) => h,
        Err((status, message)) => return respond(&mut stream, status, TEXT, format!("{message}\n").as_bytes()).await,
    };
    let request = match parse_request_line(&head) {
        Ok(r) => r,
        Err(message) => return respond(&mut stream, 400, TEXT, format!("{message}\n").as_bytes()).await,
    };
    if request.method != "GET" {
        return respond(&mut stream, 405, TEXT, format!("{} is not served here; use GET\n", truncate(&request.method)).as_bytes()).await;
    }
    let (status, content_type, body) = route(&request).await;
    respond(&mut stream, status, content_type, &body).await
}

async fn route(request: &RequestLine) -> (u16, &'static str, Vec<u8>) {
    let metrics = global();
    match request.path.as_str() {
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", metrics.render().await.into_bytes()),
        "/healthz" => (200, TEXT, b"ok\n".to_vec()),
        "/readyz" => match metrics.readiness() {
            Ok(()) => (200, TEXT, b"ready\n".to_vec()),
            Err(why) => (503, TEXT, format!("not ready: {why}\n").into_bytes()),
        },
        "/debug/heap" => {
            let heap = crate::heap::stats();
            let process = crate::procstat::read(std::process::id()).ok();
            let body = serde_json::json!({
                "heap": heap,
                "process": process.map(|p| serde_json::json!({
                    "cpu_seconds": p.cpu_seconds, "rss_bytes": p.rss_bytes, "peak_rss_bytes": p.peak_rss_bytes,
                })),
            });
            (200, "application/json", serde_json::to_vec_pretty(&body).unwrap_or_default())
        }
        "/debug/profile" => match crate::profile::seconds_from_query(&request.query) {
            Err(message) => (400, TEXT, format!("{message}\n").into_bytes()),
            Ok(seconds) => match crate::profile::flamegraph(seconds).await {
                Ok(svg) => (200, "image/svg+xml", svg),
                Err(crate::profile::ProfileError::Busy) => (409, TEXT, b"a profile is already being taken; try again when it ends\n".to_vec()),
                Err(crate::profile::ProfileError::Failed(e)) => (500, TEXT, format!("profiling failed: {e}\n").into_bytes()),
            },
        },
        path => match path.strip_prefix("/debug/").and_then(|name| metrics.debug_text(name)) {
            Some(report) => match tokio::task::spawn_blocking(move || report()).await {
                Ok(text) => (200, TEXT, text.into_bytes()),
                Err(e) => (500, TEXT, format!("the report failed: {e}\n").into_bytes()),
            },
            None => {
                let mut known = ["/metrics", "/healthz", "/readyz", "/debug/heap", "/debug/profile?seconds=N"].join(", ");
                for name in metrics.debug_names() {
                    known.push_str(&format!(", /debug/{name}"));
                }
                (404, TEXT, format!("no such page: {}; try {known}\n", truncate(path)).into_bytes())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.unwrap();
        let reply = String::from_utf8_lossy(&reply).to_string();
        let status = reply.split(' ').nth(1).unwrap().parse().unwrap();
        (status, reply.split_once("\r\n\r\n").unwrap().1.to_string())
    }

    #[test]
    fn request_lines_parse_or_say_why_not() {
        let r = parse_request_line("GET /debug/profile?seconds=3&x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/debug/profile");
        assert_eq!(r.query, vec![("seconds".into(), "3".into()), ("x".into(), "".into())]);
        assert!(parse_request_line("hello").unwrap_err().contains("not an HTTP request line"));
        assert!(parse_request_line("GET / SPDY/3").unwrap_err().contains("HTTP/1.x"));
    }

    #[tokio::test]
    async fn serves_metrics_health_and_clear_errors() {
        let config = MetricsConfig { metrics_addr: Some("127.0.0.1:0".into()) };
        let server = config.start(1).await.unwrap().unwrap();
        global().request_started("test.subject").finish(None);
        global().add_debug_text("echo", || "report\n".to_string());

        let (status, body) = get(server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, 200);
        assert!(body.contains("hsync_requests_total{endpoint=\"test.subject\",outcome=\"ok\"} 1"), "{body}");
        assert!(body.contains("process_resident_memory_bytes "), "{body}");
        assert_eq!(get(server.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await, (200, "ok\n".into()));
        // No service has registered in this process: alive, not ready.
        let (status, body) = get(server.addr, b"GET /readyz HTTP/1.0\r\n\r\n").await;
        assert_eq!((status, body.as_str()), (503, "not ready: the service has not registered its NATS endpoints yet\n"));
        assert_eq!(get(server.addr, b"GET /debug/echo HTTP/1.0\r\n\r\n").await, (200, "report\n".into()));
        let (status, body) = get(server.addr, b"GET /nope HTTP/1.0\r\n\r\n").await;
        assert_eq!(status, 404);
        assert!(body.contains("/debug/echo"), "{body}");
        assert_eq!(get(server.addr, b"POST /metrics HTTP/1.0\r\n\r\n").await.0, 405);
        assert_eq!(get(server.addr, b"garbage\r\n\r\n").await.0, 400);
        let (status, body) = get(server.addr, b"GET /debug/profile?seconds=9999 HTTP/1.0\r\n\r\n").await;
        assert_eq!(status, 400);
        assert!(body.contains("1 to 120"), "{body}");
        // An endless header is cut off, and the server goes on serving.
        let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 20_000));
        assert_eq!(get(server.addr, &huge).await.0, 431);
        assert_eq!(get(server.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await.0, 200);

        // An explicit address that is taken is an error; the default port is skipped.
        let taken = MetricsConfig { metrics_addr: Some(server.addr.to_string()) };
        assert!(taken.start(1).await.is_err());
        assert!(MetricsConfig::default().start(server.addr.port()).await.unwrap().is_none());
        assert!(MetricsConfig { metrics_addr: Some("off".into()) }.start(1).await.unwrap().is_none());
        assert!(MetricsConfig { metrics_addr: Some("nonsense".into()) }.start(1).await.unwrap_err().to_string().contains("not an address"));
    }

    #[tokio::test]
    async fn a_flamegraph_is_an_svg_of_this_process() {
        let config = MetricsConfig { metrics_addr: Some("127.0.0.1:0".into()) };
        let server = config.start(1).await.unwrap().unwrap();
        // Something to sample.
        let busy = std::thread::spawn(|| {
            let started = std::time::Instant::now();
            let mut x = 1u64;
            while started.elapsed() < Duration::from_millis(3000) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            x
        });
        let (status, body) = get(server.addr, b"GET /debug/profile?seconds=2 HTTP/1.0\r\n\r\n").await;
        busy.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("<svg"), "{} bytes: {}", body.len(), &body[..body.len().min(200)]);
    }
}
