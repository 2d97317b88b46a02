//! Every service measures itself and says so over HTTP: `/metrics` in the Prometheus
//! format with the same request counts `$SRV.STATS` gives, process CPU and memory, the
//! heap, the service's own figures; `/debug/heap`, the indexer's `/debug/rocksdb`, and a
//! CPU flamegraph on demand. Real cluster, real scrapes.

use std::time::Duration;

use hsync_client::JobClient;
use hsync_e2e::Cluster;
use hsync_protocol::job::{Job, JobStatus};
use hsync_protocol::names::services;
use hsync_testkit::cluster::metrics_url;
use hsync_testkit::http;

fn example_job() -> Job {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/jobs/01-vector-math.json");
    serde_json::from_slice(&std::fs::read(path).expect("example job")).expect("example job parses")
}

/// GETs a page of a service's metrics endpoint (`page` replaces `/metrics`).
async fn page(url: &str, page: &str, timeout: Duration) -> (u16, String) {
    let url = url.replace("/metrics", page);
    tokio::task::spawn_blocking(move || http::get(&url, timeout))
        .await
        .unwrap()
        .map(|(status, body)| (status, String::from_utf8_lossy(&body).to_string()))
        .expect("metrics endpoint answers")
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(prefix).and_then(|v| v.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_metrics_matching_its_micro_stats() {
    let c = Cluster::start().await.expect("cluster starts");
    let client = JobClient::new(c.bus.clone());
    let jobs = 5;
    for _ in 0..jobs {
        let r = client.run(&example_job(), Duration::from_secs(30)).await.expect("job runs");
        assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    }
    // One request the runner must refuse.
    let run_subject = c.bus.names().jobs_run();
    let reply = c.bus.primary().request(run_subject.clone(), "not msgpack".into()).await.expect("a reply");
    assert!(!reply.payload.is_empty());

    for service in services::ALL {
        let url = metrics_url(&c.bus, service).await.expect("metrics URL in $SRV.INFO");
        let (status, text) = page(&url, "/metrics", Duration::from_secs(5)).await;
        assert_eq!(status, 200, "{service}: {text}");
        for needle in [
            format!("hsync_info{{service=\"{service}\""),
            format!("hsync_stats_up{{service=\"{service}\"}} 1"),
            "process_cpu_seconds_total ".to_string(),
            "# TYPE hsync_heap_live_bytes gauge".to_string(),
        ] {
            assert!(text.contains(&needle), "{service}: no {needle:?} in\n{text}");
        }
        let rss = sample(&text, "process_resident_memory_bytes ").expect("RSS");
        assert!(rss > 1e6, "{service}: RSS {rss}");
        assert!(sample(&text, "hsync_heap_allocations_total ").unwrap_or(0.0) > 0.0, "{service} counts its heap");
        let (status, heap) = page(&url, "/debug/heap", Duration::from_secs(5)).await;
        assert_eq!(status, 200);
        let heap: serde_json::Value = serde_json::from_str(&heap).expect("heap JSON");
        assert_eq!(heap["heap"]["counting"], true, "{service}: {heap}");
        assert!(heap["heap"]["live_bytes"].as_u64().unwrap() > 0);
    }

    // The runner's request figures: the same count on /metrics and in $SRV.STATS.
    let url = metrics_url(&c.bus, services::OPERATOR_RUNNER).await.unwrap();
    let (_, text) = page(&url, "/metrics", Duration::from_secs(5)).await;
    let ok = sample(&text, &format!("hsync_requests_total{{endpoint=\"{run_subject}\",outcome=\"ok\"}}")).expect("ok count");
    assert_eq!(ok, jobs as f64, "{text}");
    let malformed = sample(&text, &format!("hsync_requests_total{{endpoint=\"{run_subject}\",outcome=\"MALFORMED\"}}"));
    assert_eq!(malformed, Some(1.0), "{text}");
    let count = sample(&text, &format!("hsync_request_duration_seconds_count{{endpoint=\"{run_subject}\"}}")).unwrap();
    assert_eq!(count, jobs as f64 + 1.0);
    let replies = hsync_client::discovery::collect(c.bus.primary(), "STATS", services::OPERATOR_RUNNER, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(replies.len(), 1);
    let stats = replies[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subject"] == run_subject.as_str())
        .map(|e| e["data"].clone())
        .expect("the run endpoint's stats");
    assert_eq!(stats["requests"]["requests"], jobs as u64 + 1, "{stats}");
    assert_eq!(stats["requests"]["errors"]["MALFORMED"], 1, "{stats}");
    assert!(stats["requests"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(stats["process"]["rss_bytes"].as_u64().unwrap() > 1_000_000, "{stats}");
    assert_eq!(stats["process"]["heap"]["counting"], true, "{stats}");
    // The service's own figures are there too (the result cache's, say).
    assert!(text.contains("hsync_service_cache_hits{"), "{text}");

    // The indexer's RocksDB report, and hostile requests get clear errors.
    let url = metrics_url(&c.bus, services::INDEXER).await.unwrap();
    let (status, report) = page(&url, "/debug/rocksdb", Duration::from_secs(5)).await;
    assert_eq!(status, 200);
    assert!(report.contains("DB Stats"), "{report}");
    assert!(report.contains("HSYNC_INDEX_STATISTICS"), "statistics are off by default: {report}");
    let (status, body) = page(&url, "/nothing-here", Duration::from_secs(5)).await;
    assert_eq!(status, 404);
    assert!(body.contains("/debug/rocksdb"), "{body}");
    let (status, body) = page(&url, "/debug/profile?seconds=0", Duration::from_secs(5)).await;
    assert_eq!(status, 400, "{body}");

    // A two-second CPU profile of the runner while it works.
    let url = metrics_url(&c.bus, services::OPERATOR_RUNNER).await.unwrap();
    let load = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                let _ = client.run(&example_job(), Duration::from_secs(30)).await;
            }
        })
    };
    let (status, svg) = page(&url, "/debug/profile?seconds=2", Duration::from_secs(30)).await;
    load.abort();
    assert_eq!(status, 200, "{svg}");
    assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(300)]);
}

/// `/readyz` is 200 while the service's NATS connection is up, 503 naming the connection
/// while NATS is gone, and 200 again once it is back; `/healthz` stays 200 throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_nats_connection() {
    let mut c = Cluster::start().await.expect("cluster starts");
    let mut urls = Vec::new();
    for service in services::ALL {
        let url = metrics_url(&c.bus, service).await.expect("metrics URL");
        assert_eq!(page(&url, "/readyz", Duration::from_secs(5)).await, (200, "ready\n".to_string()), "{service}");
        urls.push((service, url));
    }
    let wait_for = |url: String, want: u16| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = page(&url, "/readyz", Duration::from_secs(5)).await;
            if status == want {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "{url}/readyz still {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    c.nats.nodes[0].kill();
    for (service, url) in &urls {
        let body = wait_for(url.clone(), 503).await;
        assert!(body.contains("NATS connection"), "{service}: {body}");
        assert_eq!(page(url, "/healthz", Duration::from_secs(5)).await.0, 200, "{service} is alive");
    }
    c.nats.nodes[0].restart().expect("NATS restarts");
    for (_, url) in &urls {
        assert_eq!(wait_for(url.clone(), 200).await, "ready\n");
    }
}
