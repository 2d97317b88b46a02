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
use crate::{NatsServer, OtlpSink};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

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

pub struct Cluster {
    pub nats: NatsServer,
    pub otlp: OtlpSink,
    pub dir: tempfile::TempDir,
    pub bus: Arc<Bus>,
    children: Vec<(String, Child)>,
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
        let nats = NatsServer::start()?;
        let otlp = OtlpSink::start().await?;
        let dir = tempfile::tempdir()?;
        let bus = Arc::new(Bus::connect(&BusConfig::for_url(&nats.url()), "e2e").await?);
        let mut cluster = Cluster {
            nats,
            otlp,
            dir,
            bus,
            children: Vec::new(),
            bins: bin_dir()?,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        for name in SERVICE_BINARIES {
            let child = cluster.spawn(name)?;
            cluster.children.push((name.to_string(), child));
        }
        cluster.wait_ready(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    fn spawn(&self, name: &str) -> anyhow::Result<Child> {
        self.spawn_as(name, name, &[])
    }

    /// Starts another process of `binary` (a replica), known to `kill` and `log` as
    /// `name`, with extra environment (e.g. its own `HSYNC_SIGNER_DIR`).
    pub fn start_replica(&mut self, binary: &str, name: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
        anyhow::ensure!(self.children.iter().all(|(n, _)| n != name), "a process named {name} is already running");
        let child = self.spawn_as(binary, name, env)?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    fn spawn_as(&self, binary: &str, name: &str, extra_env: &[(&str, &str)]) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))?;
        let mut cmd = Command::new(self.bins.join(binary));
        cmd.env("NATS_URL", self.nats.url())
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
            .pid()
            .map(|p| ("nats-server".to_string(), p))
            .into_iter()
            .chain(self.children.iter().map(|(n, c)| (n.clone(), c.id())))
            .collect()
    }

    /// SIGKILL one service (no chance to drain or flush): a crash.
    pub fn kill(&mut self, name: &str) {
        if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed (or stopped) service again on the same state and waits until every
    /// service answers.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.kill(name);
        let child = self.spawn(name)?;
        match self.children.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = child,
            None => self.children.push((name.to_string(), child)),
        }
        self.wait_ready(Duration::from_secs(60)).await
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut missing = Vec::new();
            for name in services::ALL {
                let answers =
                    hsync_client::discovery::collect(self.bus.primary(), "PING", name, Duration::from_millis(200)).await?;
                if answers.is_empty() {
                    missing.push(name);
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            let mut exited = None;
            for (name, child) in self.children.iter_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some((name.clone(), status));
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
            .env("NATS_URL", self.nats.url())
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
        for (_, c) in &self.children {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let mut out = Vec::new();
        for (name, c) in self.children.iter_mut() {
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
        for (_, c) in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
