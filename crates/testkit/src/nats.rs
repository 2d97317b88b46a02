//! A throwaway `nats-server` child process for tests.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Environment variable that overrides the `nats-server` binary path.
const BINARY_ENV: &str = "HSYNC_NATS_SERVER";
/// How long [`NatsServer::start`] / [`NatsServer::restart`] wait for the server to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The line nats-server logs once every listener (client, JetStream) is up.
const READY_LINE: &str = "Server is ready";
/// How many log lines an error message quotes.
const LOG_TAIL_LINES: usize = 40;

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and closing the listener again, so another process
/// could in principle grab it before the caller binds it; [`NatsServer::start`] retries with a
/// fresh port when that race is lost.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// A `nats-server -js` child process on a free loopback port with a temporary store.
///
/// Dropping it kills the server (SIGKILL) and removes the store directory.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    /// HTTP monitoring port (`/varz`: messages and bytes through the server).
    monitor_port: u16,
    child: Option<Child>,
    /// Set for a node of a [`NatsCluster`]: its name, cluster port and the others' routes.
    node: Option<ClusterNode>,
    // Holds `store/` and `nats.log`; removed on drop (declared last so the child is
    // killed before the directory goes away — see `Drop`).
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server -a 127.0.0.1 -p <free port> -m <free port> -js -sd <tempdir>` and waits (≤ 10 s)
    /// until a TCP connect succeeds and the log says the server is ready.
    ///
    /// The binary is `$HSYNC_NATS_SERVER` if set, else `nats-server` from `PATH`.
    pub fn start() -> anyhow::Result<NatsServer> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("hsync-nats-")
            .tempdir()
            .context("creating a temporary directory for the nats-server store")?;
        std::fs::create_dir_all(dir.path().join("store")).context("creating the store dir")?;

        let mut server = NatsServer {
            binary,
            port: free_port(),
            monitor_port: free_port(),
            child: None,
            node: None,
            dir,
        };
        // `free_port` can race with other processes grabbing the same port; a lost race shows
        // up as the child exiting with "address already in use", so retry with a new port.
        let mut attempt = 1;
        loop {
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) if attempt >= 3 => return Err(e),
                Err(_) => {
                    attempt += 1;
                    server.port = free_port();
                    server.monitor_port = free_port();
                }
            }
        }
    }

    /// A cluster node: like [`NatsServer::start`] with `-n`, `--cluster_name`, `--cluster` and
    /// `--routes`, and without waiting for the other nodes (see [`NatsCluster::start`]).
    fn start_node(port: u16, monitor_port: u16, node: ClusterNode) -> anyhow::Result<NatsServer> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hsync-{}-", node.name))
            .tempdir()
            .context("creating a temporary directory for the nats-server store")?;
        std::fs::create_dir_all(dir.path().join("store")).context("creating the store dir")?;
        let mut server = NatsServer {
            binary: find_binary()?,
            port,
            monitor_port,
            child: None,
            node: Some(node),
            dir,
        };
        server.spawn_and_wait()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's `/varz` monitoring figures: `in_msgs`, `out_msgs`, `in_bytes`,
    /// `out_bytes` (payload bytes from and to all clients since it started), connections.
    pub fn varz(&self) -> anyhow::Result<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/varz", self.monitor_port);
        let (status, body) = crate::http::get(&url, Duration::from_secs(5))?;
        anyhow::ensure!(status == 200, "{url} answered {status}");
        serde_json::from_slice(&body).with_context(|| format!("{url}: not JSON"))
    }

    /// Stops the server (gracefully if it is still running, so JetStream flushes its store)
    /// and starts it again on the same port with the same store directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop_gracefully();
        self.spawn_and_wait()
    }

    /// Process id of the running server (for /proc readings), `None` once killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server with SIGKILL (no graceful shutdown) and reaps it. Idempotent; the
    /// store is kept so [`NatsServer::restart`] can bring it back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix. An error means it already exited.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// SIGTERM via the `kill` utility (std offers only SIGKILL and this crate forbids the
    /// `unsafe` a libc call would need), falling back to SIGKILL after 5 s.
    fn stop_gracefully(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let terminated = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if terminated {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let log_path = self.log_path();
        // Append, so a restart keeps the earlier runs' log; readiness is judged only on what
        // this run wrote (from `offset` on). The child writes to a file rather than a pipe so
        // a chatty server can never block on a full pipe nobody reads.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let store = self.dir.path().join("store");
        let port = self.port.to_string();
        let monitor_port = self.monitor_port.to_string();
        let mut cmd = Command::new(&self.binary);
        cmd.args(["-a", "127.0.0.1", "-p", &port, "-m", &monitor_port, "-js", "-sd"]).arg(&store);
        if let Some(node) = &self.node {
            let routes: Vec<String> = node.routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
            cmd.args(["-n", &node.name, "--cluster_name", CLUSTER_NAME])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", node.cluster_port)])
                .args(["--routes", &routes.join(",")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file handle")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);

        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("just spawned");
            if let Some(status) = child.try_wait().context("polling nats-server")? {
                self.child = None;
                bail!(
                    "nats-server on port {} exited during startup ({status}); log tail:\n{}",
                    self.port,
                    log_tail(&log_path, offset)
                );
            }
            let log_ready = read_from(&log_path, offset).contains(READY_LINE);
            if log_ready && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "nats-server on port {} was not ready within {:?}; log tail:\n{}",
                    self.port,
                    READY_TIMEOUT,
                    log_tail(&log_path, offset)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

const CLUSTER_NAME: &str = "hsync-test";

#[derive(Debug, Clone)]
struct ClusterNode {
    name: String,
    cluster_port: u16,
    /// Cluster ports of the other nodes.
    routes: Vec<u16>,
}

/// A JetStream cluster of `nats-server` child processes on loopback, each with its own
/// temporary store, for tests that kill a node (and for `hsync bench` on a cluster).
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// One plain server (no cluster configuration): what most tests run against.
    pub fn single() -> anyhow::Result<NatsCluster> {
        Ok(NatsCluster {
            nodes: vec![NatsServer::start()?],
        })
    }

    /// Starts `n` nodes routed to each other and waits (≤ 30 s) until JetStream has a
    /// meta leader, so streams with up to `n` replicas can be created at once.
    pub fn start(n: usize) -> anyhow::Result<NatsCluster> {
        anyhow::ensure!(n >= 2, "a cluster needs at least two nodes; use NatsCluster::single");
        let ports: Vec<(u16, u16, u16)> = (0..n).map(|_| (free_port(), free_port(), free_port())).collect();
        let mut nodes = Vec::with_capacity(n);
        for (i, &(port, monitor, cluster_port)) in ports.iter().enumerate() {
            let routes = ports.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| p.2).collect();
            let node = ClusterNode {
                name: format!("n{}", i + 1),
                cluster_port,
                routes,
            };
            nodes.push(NatsServer::start_node(port, monitor, node)?);
        }
        let cluster = NatsCluster { nodes };
        cluster.wait_for_jetstream(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated (what `NATS_URL` takes).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }

    /// Waits until every running node sees the same JetStream meta leader and the whole
    /// cluster as its peers.
    pub fn wait_for_jetstream(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            let mut last = String::new();
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                match node.jsz() {
                    Ok(jsz) => {
                        let leader = jsz["meta_cluster"]["leader"].as_str().unwrap_or_default().to_string();
                        last = jsz["meta_cluster"].to_string();
                        leaders.push(leader);
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
            if leaders.len() == running && !leaders[0].is_empty() && leaders.iter().all(|l| *l == leaders[0]) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the NATS cluster has no JetStream meta leader after {timeout:?}: {last}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl NatsServer {
    /// The server's `/jsz` figures (JetStream state; `meta_cluster` on a cluster node).
    pub fn jsz(&self) -> anyhow::Result<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/jsz", self.monitor_port);
        let (status, body) = crate::http::get(&url, Duration::from_secs(5))?;
        anyhow::ensure!(status == 200, "{url} answered {status}");
        serde_json::from_slice(&body).with_context(|| format!("{url}: not JSON"))
    }

    /// This node's server name in a cluster.
    pub fn name(&self) -> Option<&str> {
        self.node.as_ref().map(|n| n.name.as_str())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Kill first: the TempDir field is dropped after this and removes the store, which
        // must not happen under a live server.
        self.kill();
    }
}

fn find_binary() -> anyhow::Result<PathBuf> {
    const HINT: &str = "install nats-server (apt-get install nats-server)";
    if let Some(path) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "{BINARY_ENV}={} does not name a file; set it to a nats-server binary or {HINT}",
            path.display()
        );
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("`nats-server` was not found on PATH: {HINT}"))
}

/// The log's contents from byte `offset` on (lossy UTF-8); empty if unreadable.
fn read_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn log_tail(path: &Path, offset: u64) -> String {
    let text = read_from(path, offset);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    if lines.is_empty() {
        "<empty log>".to_owned()
    } else {
        lines[start..].join("\n")
    }
}
