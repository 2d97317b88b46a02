//! A whole HyperSync installation in real processes — a fresh nats-server (free port,
//! JetStream, temporary store), the five service binaries from the cargo target
//! directory, and an in-process OTLP receiver they export their spans to. Used by the
//! end-to-end tests and by `hsync bench`, which starts one per variant it compares.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsync_bus::{Bus, BusConfig};
use hsync_protocol::names::services;
use crate::{NatsCluster, OtlpSink};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The service binaries, in start order (consumers of a stream before its producers).
pub const SERVICE_BINARIES: [&str; 5] = ["indexer", "receipt-signer", "policy-evaluator", "geometry-cache", "operator-runner"];

/// Every signed batch in the receipts stream, in order: the published log as a whole.
pub async fn signed_batches(bus: &Bus) -> anyhow::Result<Vec<hsync_protocol::receipt::SignedBatch>> {
    let stream = bus.jetstream().get_stream(bus.names().stream_receipts()).await?;
    let last = stream.get_info().await?.state.last_sequence;
    let mut out = Vec::with_capacity(last as usize);
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await?;
        out.push(bus.codec().decode(Some(&m.headers), &m.payload)?);
    }
    Ok(out)
}

/// A service's `$SRV.STATS` figures (the data of its endpoints); an error unless exactly
/// one instance of it answers.
pub async fn service_stats(bus: &Bus, service: &str) -> anyhow::Result<serde_json::Value> {
    let stats = hsync_client::discovery::collect(bus.primary(), "STATS", service, Duration::from_millis(500)).await?;
    anyhow::ensure!(stats.len() == 1, "{} instances of {service} answered $SRV.STATS, expected one", stats.len());
    Ok(stats[0]["endpoints"][0]["data"].clone())
}

/// The URL of a service's `/metrics` page, from the `metrics` metadata of its `$SRV.INFO`;
/// an error unless exactly one instance answers with one.
pub async fn metrics_url(bus: &Bus, service: &str) -> anyhow::Result<String> {
    let infos = hsync_client::discovery::collect(bus.primary(), "INFO", service, Duration::from_millis(500)).await?;
    anyhow::ensure!(infos.len() == 1, "{} instances of {service} answered $SRV.INFO, expected one", infos.len());
    infos[0]["metadata"]["metrics"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{service} has no metrics endpoint in its $SRV.INFO: {}", infos[0]))
}

/// Where the service binaries are: `HSYNC_BIN_DIR`, else next to the running executable
/// (`hsync`), else one level up (a test executable lives in `<target>/<profile>/deps/`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(d) = std::env::var("HSYNC_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe()?;
    let candidates: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(PathBuf::from).collect();
    candidates
        .iter()
        .find(|d| SERVICE_BINARIES.iter().all(|b| d.join(b).exists()))
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the service binaries ({}) are not in {}: build them first (`make build`) or set HSYNC_BIN_DIR",
                SERVICE_BINARIES.join(", "),
                candidates.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" or ")
            )
        })
}

/// How many NATS nodes and how many processes of each service a [`Cluster`] runs.
#[derive(Debug, Clone, Copy)]
pub struct Topology {
    /// 1: a plain nats-server; 3: a JetStream cluster with every stream at 3 replicas.
    pub nats_nodes: usize,
    /// Processes of each service. Replica k > 1 of the signer gets its own state directory
    /// with the first one's key (a standby); of the indexer, its own RocksDB and durable.
    pub replicas: usize,
}

impl Default for Topology {
    fn default() -> Self {
        Topology { nats_nodes: 1, replicas: 1 }
    }
}

/// The NATS micro service name of a service binary.
pub fn service_of(binary: &str) -> &'static str {
    match binary {
        "operator-runner" => services::OPERATOR_RUNNER,
        "policy-evaluator" => services::POLICY_EVALUATOR,
        "geometry-cache" => services::GEOMETRY_CACHE,
        "receipt-signer" => services::RECEIPT_SIGNER,
        _ => services::INDEXER,
    }
}

/// The name `kill`, `restart` and `log` know replica `k` (from 1) of `binary` by.
pub fn replica_name(binary: &str, k: usize) -> String {
    if k <= 1 {
        binary.to_string()
    } else {
        format!("{binary}-{k}")
    }
}

/// A service process and how to start it again.
struct Process {
    name: String,
    binary: String,
    env: Vec<(String, String)>,
    child: Child,
}

/// The state of replica `k` > 1 of `binary` under `state_dir`, as environment: a standby
/// signer gets `signer-<k>/` with a copy of the first signer's key (written by it at
/// start); an indexer gets its own RocksDB `index-<k>/` and durable `indexer-<k>`, so
/// each sees every batch. The layout `hsync up --replicas` and the tests share.
pub fn replica_env(state_dir: &std::path::Path, binary: &str, k: usize) -> anyhow::Result<Vec<(String, String)>> {
    use anyhow::Context as _;
    Ok(match binary {
        "receipt-signer" => {
            let own = state_dir.join(format!("signer-{k}"));
            std::fs::create_dir_all(&own).with_context(|| format!("cannot create {}", own.display()))?;
            let key = state_dir.join("signer").join("signer.key");
            if !own.join("signer.key").exists() {
                std::fs::copy(&key, own.join("signer.key"))
                    .with_context(|| format!("a standby signer needs the leader's key {}", key.display()))?;
            }
            vec![("HSYNC_SIGNER_DIR".into(), own.display().to_string())]
        }
        "indexer" => vec![
            ("HSYNC_INDEX_DIR".into(), state_dir.join(format!("index-{k}")).display().to_string()),
            ("HSYNC_INDEX_CONSUMER".into(), format!("indexer-{k}")),
        ],
        _ => Vec::new(),
    })
}

pub struct Cluster {
    pub nats: NatsCluster,
    pub otlp: OtlpSink,
    pub dir: tempfile::TempDir,
    pub bus: Arc<Bus>,
    children: Vec<Process>,
    bins: PathBuf,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts everything and waits until all five services answer `$SRV.PING`.
    pub async fn start() -> anyhow::Result<Cluster> {
        Self::start_with(&[]).await
    }

    /// Like [`Cluster::start`], with extra environment for every service (e.g.
    /// `HSYNC_RESULT_CACHE_ENTRIES=0` to compare a variant).
    pub async fn start_with(env: &[(&str, &str)]) -> anyhow::Result<Cluster> {
        Self::start_topology(Topology::default(), env).await
    }

    /// Like [`Cluster::start_with`] on `topology.nats_nodes` NATS nodes with
    /// `topology.replicas` processes of each service.
    pub async fn start_topology(topology: Topology, env: &[(&str, &str)]) -> anyhow::Result<Cluster> {
        let nats = match topology.nats_nodes {
            0 | 1 => NatsCluster::single()?,
            n => NatsCluster::start(n)?,
        };
        let otlp = OtlpSink::start().await?;
        let dir = tempfile::tempdir()?;
        let bus = Arc::new(Bus::connect(&BusConfig::for_url(&nats.urls()), "e2e").await?);
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if topology.nats_nodes > 1 && env.iter().all(|(k, _)| k != "HSYNC_REPLICAS") {
            env.push(("HSYNC_REPLICAS".into(), topology.nats_nodes.min(3).to_string()));
        }
        let mut cluster = Cluster {
            nats,
            otlp,
            dir,
            bus,
            children: Vec::new(),
            bins: bin_dir()?,
            env,
        };
        for binary in SERVICE_BINARIES {
            cluster.start_replica(binary, binary, &[])?;
        }
        cluster.wait_ready(Duration::from_secs(60)).await?;
        // The first signer has written the key the standbys share by now.
        for k in 2..=topology.replicas {
            for binary in SERVICE_BINARIES {
                let env = cluster.replica_env(binary, k)?;
                let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                cluster.start_replica(binary, &replica_name(binary, k), &env)?;
            }
        }
        cluster.wait_ready(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// What replica `k` > 1 of `binary` needs besides the cluster's environment.
    fn replica_env(&self, binary: &str, k: usize) -> anyhow::Result<Vec<(String, String)>> {
        replica_env(self.dir.path(), binary, k)
    }

    /// Starts another process of `binary` (a replica), known to `kill` and `log` as
    /// `name`, with extra environment (e.g. its own `HSYNC_SIGNER_DIR`).
    pub fn start_replica(&mut self, binary: &str, name: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
        anyhow::ensure!(self.children.iter().all(|p| p.name != name), "a process named {name} is already running");
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let child = self.spawn_as(binary, name, &env)?;
        self.children.push(Process {
            name: name.to_string(),
            binary: binary.to_string(),
            env,
            child,
        });
        Ok(())
    }

    fn spawn_as(&self, binary: &str, name: &str, extra_env: &[(String, String)]) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))?;
        let mut cmd = Command::new(self.bins.join(binary));
        cmd.env("NATS_URL", self.nats.urls())
            .env("HSYNC_SIGNER_DIR", self.dir.path().join("signer"))
            .env("HSYNC_INDEX_DIR", self.dir.path().join("index"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", self.otlp.endpoint())
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            // Any free port: clusters run side by side; `metrics_url` finds it.
            .env("HSYNC_METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Ok(cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?)
    }

    /// The operator-runner's `$SRV.STATS` figures (the data of its endpoints); an error
    /// unless exactly one runner answers.
    pub async fn runner_stats(&self) -> anyhow::Result<serde_json::Value> {
        service_stats(&self.bus, services::OPERATOR_RUNNER).await
    }

    /// Name and process id of every process of the cluster: nats-server, then each service
    /// (and replica) that was started.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.nats
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.pid().map(|p| (if i == 0 { "nats-server".to_string() } else { format!("nats-server-{}", i + 1) }, p)))
            .chain(self.children.iter().map(|p| (p.name.clone(), p.child.id())))
            .collect()
    }

    /// SIGKILL one service (no chance to drain or flush): a crash.
    pub fn kill(&mut self, name: &str) {
        if let Some(p) = self.children.iter_mut().find(|p| p.name == name) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Starts a killed (or stopped) service (or replica) again on the same state and waits
    /// until every service answers.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.kill(name);
        match self.children.iter().position(|p| p.name == name) {
            Some(i) => {
                let child = self.spawn_as(&self.children[i].binary, name, &self.children[i].env)?;
                self.children[i].child = child;
            }
            None => self.start_replica(name, name, &[])?,
        }
        self.wait_ready(Duration::from_secs(60)).await
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut missing = Vec::new();
            for binary in SERVICE_BINARIES {
                let name = service_of(binary);
                let running = self.children.iter().filter(|p| p.binary == binary).count();
                let answers =
                    hsync_client::discovery::collect(self.bus.primary(), "PING", name, Duration::from_millis(200)).await?;
                if answers.len() < running.max(1) {
                    missing.push(format!("{name} ({} of {})", answers.len(), running.max(1)));
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            let mut exited = None;
            for p in self.children.iter_mut() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    exited = Some((p.name.clone(), status));
                }
            }
            if let Some((name, status)) = exited {
                anyhow::bail!("{name} exited ({status}) during start-up:\n{}", self.log(&name));
            }
            if Instant::now() > deadline {
                anyhow::bail!("services not ready: {}", missing.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the `hsync` CLI against this cluster with `stdin` as its input.
    pub fn hsync(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write;
        let bin = self.bins.join("hsync");
        let mut child = Command::new(&bin)
            .args(args)
            .env("NATS_URL", self.nats.urls())
            .env("HSYNC_CONNECT_TIMEOUT_S", "5")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e} (build the workspace first)", bin.display()));
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("hsync finishes")
    }

    /// A service's log so far (for assertion messages).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    pub fn signer_vkey_path(&self) -> PathBuf {
        self.dir.path().join("signer").join("signer.vkey")
    }

    /// SIGTERM every service and wait for it: exercises graceful shutdown.
    pub fn stop_services(&mut self) -> Vec<(String, Option<i32>)> {
        for p in &self.children {
            let _ = kill(Pid::from_raw(p.child.id() as i32), Signal::SIGTERM);
        }
        let mut out = Vec::new();
        for Process { name, child: c, .. } in self.children.iter_mut() {
            let deadline = Instant::now() + Duration::from_secs(15);
            let code = loop {
                match c.try_wait() {
                    Ok(Some(s)) => break s.code(),
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        break None;
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            out.push((name.clone(), code));
        }
        self.children.clear();
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.children.iter_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}
