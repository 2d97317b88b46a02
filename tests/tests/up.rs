//! `hsync up --cluster 3 --replicas 2 --detach`: a local 3-node NATS cluster with two
//! processes of every service comes up, runs the demo (results and an offline-verified
//! receipt), keeps its streams at three replicas, replaces a killed service, and `hsync down`
//! stops all of it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hsync_bus::{Bus, BusConfig};
use hsync_protocol::names::services;

/// `n` consecutive ports that were free a moment ago.
fn free_ports(n: u16) -> u16 {
    loop {
        let base = hsync_testkit::free_port();
        if base.checked_add(n).is_some()
            && (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

fn hsync(bins: &Path, args: &[&str], url: &str) -> Output {
    Command::new(bins.join("hsync"))
        .args(args)
        .env("HSYNC_BIN_DIR", bins)
        .env("NATS_URL", url)
        .output()
        .expect("hsync runs")
}

fn ok(out: Output, what: &str) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    text
}

/// Process ids of the running processes whose command line and environment contain all
/// of `needles` (the services get their state directory through the environment).
fn pids_with(needles: &[&str]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let mut cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmd.extend(std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default());
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            needles.iter().all(|n| cmd.contains(n))
        })
        .collect()
}

async fn instances(bus: &Bus, service: &str) -> usize {
    hsync_client::discovery::collect(bus.primary(), "PING", service, Duration::from_millis(300))
        .await
        .expect("discovery")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_three_node_cluster_with_replicas_and_down_stops_it() {
    let bins = hsync_e2e::bin_dir().expect("binaries built");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (port, route, monitor) = (free_ports(3), free_ports(3), free_ports(3));
    let urls: Vec<String> = (0..3).map(|i| format!("nats://127.0.0.1:{}", port + i)).collect();
    let url = urls.join(",");
    let (port_s, route_s, monitor_s) = (port.to_string(), route.to_string(), monitor.to_string());
    let state_s = state.display().to_string();
    let up = [
        "up", "--detach", "--cluster", "3", "--replicas", "2", "--port", &port_s, "--cluster-port", &route_s,
        "--monitor-port", &monitor_s, "--dir", &state_s,
    ];
    struct Down(PathBuf, PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = Command::new(self.0.join("hsync")).args(["down", "--dir"]).arg(&self.1).output();
        }
    }
    let out = ok(hsync(&bins, &up, &url), "hsync up");
    let _down = Down(bins.clone(), state.clone());
    assert!(out.contains("HyperSync is up"), "{out}");

    let bus = Bus::connect(&BusConfig::for_url(&url), "up-test").await.expect("connects");
    for service in services::ALL {
        assert_eq!(instances(&bus, service).await, 2, "{service}: two processes answer");
    }
    // Streams are replicated on all three nodes.
    let mut records = bus.jetstream().get_stream(bus.names().stream_records()).await.expect("records stream");
    let info = records.info().await.expect("stream info");
    assert_eq!(info.config.num_replicas, 3, "{:?}", info.config);
    let cluster = info.cluster.as_ref().expect("clustered stream");
    assert_eq!(cluster.replicas.len() + 1, 3, "leader and two followers: {cluster:?}");

    // The demo runs its jobs and verifies a receipt offline.
    let jobs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs");
    let vkey = state.join("signer").join("signer.vkey");
    let demo = ok(
        hsync(&bins, &["demo", "--jobs", jobs.to_str().unwrap(), "--key", vkey.to_str().unwrap()], &url),
        "hsync demo",
    );
    assert!(demo.contains("receipt verified"), "{demo}");

    // The supervisor replaces a service replica that is SIGKILLed.
    let standby_dir = state.join("signer-2").display().to_string();
    let standby = pids_with(&["receipt-signer", &state_s]);
    assert_eq!(standby.len(), 2, "two receipt-signers run: {standby:?}");
    let victim = standby[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = pids_with(&["receipt-signer", &state_s]);
        if now.len() == 2 && !now.contains(&victim) && instances(&bus, services::RECEIPT_SIGNER).await == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the killed signer was not replaced: {now:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(Path::new(&standby_dir).join("signer.key").exists(), "the standby has its own state directory");

    drop(bus);
    ok(hsync(&bins, &["down", "--dir", &state_s], &url), "hsync down");
    for u in &urls {
        let port: u16 = u.rsplit(':').next().unwrap().parse().unwrap();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "a NATS node still listens on {port}");
    }
    assert!(pids_with(&[&state_s]).is_empty(), "processes of the cluster still run");
}
