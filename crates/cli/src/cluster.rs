//! `hsync up` / `hsync down`: a local cluster (nats-server with JetStream, or a cluster of
//! them, plus replicas of the five services) as child processes, for development, demos,
//! fault drills and tests.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use hsync_bus::{BusConfig, Shutdown};
use hsync_protocol::names::services;
use hsync_testkit::cluster::{replica_env, replica_name, SERVICE_BINARIES};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};


#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Client port of the local nats-server; with --cluster N, nodes listen on PORT..PORT+N-1.
    #[arg(long, default_value_t = 4222)]
    port: u16,
    /// NATS nodes: 1 is a plain server; 3 is a JetStream cluster on loopback (routes on
    /// --cluster-port.., monitoring on --monitor-port..) with every stream at 3 replicas.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=5))]
    cluster: u16,
    /// First route port of the NATS cluster.
    #[arg(long, default_value_t = 6222)]
    cluster_port: u16,
    /// First HTTP monitoring port of the NATS cluster's nodes (/varz, /jsz).
    #[arg(long, default_value_t = 8222)]
    monitor_port: u16,
    /// Processes of each service. Signer replicas stand by for the leader (they share its
    /// key); indexer replicas keep their own index.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    replicas: u16,
    /// State directory: JetStream store, signer key and log state, index, logs.
    #[arg(long, default_value = ".hsync")]
    dir: PathBuf,
    /// Start in the background and return once every service answers; stop with `hsync down`.
    #[arg(long)]
    detach: bool,
    /// nats-server binary.
    #[arg(long, env = "HSYNC_NATS_SERVER", default_value = "nats-server")]
    nats_server: String,
    /// Directory holding the service binaries (default: the directory of `hsync`).
    #[arg(long, env = "HSYNC_BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("hsync-up.pid")
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    let path = dir.join("logs").join(format!("{name}.log"));
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open log {}", path.display()))
}

fn url(port: u16) -> String {
    format!("nats://127.0.0.1:{port}")
}

impl UpArgs {
    fn client_ports(&self) -> Vec<u16> {
        (0..self.cluster).map(|i| self.port + i).collect()
    }

    /// `NATS_URL` for the services: every node, so they fail over.
    fn urls(&self) -> String {
        self.client_ports().into_iter().map(url).collect::<Vec<_>>().join(",")
    }

    /// nats-server's arguments for node `i` (from 0).
    fn nats_args(&self, i: u16) -> Vec<String> {
        let mut args: Vec<String> = vec!["-a".into(), "127.0.0.1".into(), "-p".into(), (self.port + i).to_string(), "-js".into()];
        if self.cluster == 1 {
            args.extend(["-sd".into(), self.dir.join("nats").display().to_string()]);
            return args;
        }
        let routes: Vec<String> = (0..self.cluster).filter(|j| *j != i).map(|j| url(self.cluster_port + j)).collect();
        args.extend([
            "-sd".into(),
            self.dir.join(format!("nats-{}", i + 1)).display().to_string(),
            "-n".into(),
            format!("hsync-{}", i + 1),
            "-m".into(),
            (self.monitor_port + i).to_string(),
            "--cluster_name".into(),
            "hsync-local".into(),
            "--cluster".into(),
            url(self.cluster_port + i),
            "--routes".into(),
            routes.join(","),
        ]);
        args
    }
}

/// A supervised child: a NATS node or a service replica.
struct Supervised {
    name: String,
    child: Child,
    restarts: u32,
}

/// A service process: replica `k` (from 1) of `binary`.
struct Service {
    binary: &'static str,
    k: u16,
    process: Supervised,
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(args.dir.join("logs")).with_context(|| format!("cannot create {}", args.dir.display()))?;
    anyhow::ensure!(
        [args.port, args.cluster_port, args.monitor_port].iter().all(|p| p.checked_add(args.cluster).is_some()),
        "--port, --cluster-port and --monitor-port leave no room for {} nodes",
        args.cluster
    );
    for port in args.client_ports() {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            anyhow::bail!(
                "port {port} is already in use: is a cluster already up? Stop it with `hsync down --dir {}` or pick --port",
                args.dir.display()
            );
        }
    }
    if args.detach {
        return detach(&args).await;
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .context("cannot tell where hsync is installed; pass --bin-dir")?,
    };
    for b in SERVICE_BINARIES {
        anyhow::ensure!(
            bin_dir.join(b).exists(),
            "service binary {} not found (build with `cargo build --release --workspace` or pass --bin-dir)",
            bin_dir.join(b).display()
        );
    }
    let shutdown = Shutdown::on_signals();
    let mut signal = shutdown.signal();

    let mut nats = Vec::new();
    for i in 0..args.cluster {
        nats.push(Supervised {
            name: nats_name(&args, i),
            child: spawn_nats(&args, i)?,
            restarts: 0,
        });
    }
    for port in args.client_ports() {
        wait_for_port(port, Duration::from_secs(15)).await?;
    }
    eprintln!("nats-server (JetStream, {} node(s)) listening on {}", args.cluster, args.urls());

    let logs = args.dir.join("logs");
    let mut children: Vec<Service> = Vec::new();
    let start = |binary: &'static str, k: u16| -> anyhow::Result<Service> {
        Ok(Service {
            binary,
            k,
            process: Supervised {
                name: replica_name(binary, k.into()),
                child: spawn_service(&args, &bin_dir, binary, k)?,
                restarts: 0,
            },
        })
    };
    for binary in SERVICE_BINARIES {
        children.push(start(binary, 1)?);
    }
    // Standby signers copy the first signer's key, which it writes at start.
    let mut ready = wait_until_ready(&args.urls(), 1, Duration::from_secs(120)).await;
    if ready.is_ok() && args.replicas > 1 {
        for k in 2..=args.replicas {
            for binary in SERVICE_BINARIES {
                children.push(start(binary, k)?);
            }
        }
        ready = wait_until_ready(&args.urls(), args.replicas as usize, Duration::from_secs(120)).await;
    }
    match ready {
        Ok(()) => eprintln!(
            "HyperSync is up: NATS at {}, {} process(es) of each service, logs in {}; Ctrl-C stops everything",
            args.urls(),
            args.replicas,
            logs.display()
        ),
        Err(e) => eprintln!("warning: {e}; see the logs in {}", logs.display()),
    }

    // Supervise: restart a process that dies, a few times, until shutdown. A single
    // nats-server that cannot be restarted ends everything.
    'supervise: loop {
        tokio::select! {
            _ = signal.wait() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        for (i, node) in nats.iter_mut().enumerate() {
            if let Ok(Some(status)) = node.child.try_wait() {
                if node.restarts >= 5 {
                    if args.cluster == 1 {
                        eprintln!("nats-server exited ({status}) 5 times; stopping");
                        break 'supervise;
                    }
                    continue;
                }
                node.restarts += 1;
                eprintln!("{} exited ({status}); restarting (attempt {}/5)", node.name, node.restarts);
                node.child = spawn_nats(&args, i as u16)?;
            }
        }
        for Service { binary, k, process: s } in children.iter_mut() {
            if let Ok(Some(status)) = s.child.try_wait() {
                if s.restarts >= 5 {
                    continue;
                }
                s.restarts += 1;
                eprintln!(
                    "{} exited ({status}); restarting (attempt {}/5); see {}/{}.log",
                    s.name,
                    s.restarts,
                    logs.display(),
                    s.name
                );
                s.child = spawn_service(&args, &bin_dir, binary, *k)?;
            }
        }
    }

    eprintln!("stopping services");
    for s in children.iter_mut().rev() {
        terminate(&mut s.process.child);
    }
    for Service { process: s, .. } in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(15), s.child.wait()).await.is_err() {
            eprintln!("{} did not stop in 15 s; killing it", s.name);
            let _ = s.child.kill().await;
        }
    }
    for node in nats.iter_mut() {
        terminate(&mut node.child);
    }
    for node in nats.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), node.child.wait()).await.is_err() {
            let _ = node.child.kill().await;
        }
    }
    let _ = std::fs::remove_file(pid_file(&args.dir));
    eprintln!("stopped");
    Ok(())
}

fn nats_name(args: &UpArgs, i: u16) -> String {
    if args.cluster == 1 {
        "nats-server".to_string()
    } else {
        format!("nats-server-{}", i + 1)
    }
}

fn spawn_nats(args: &UpArgs, i: u16) -> anyhow::Result<Child> {
    let name = nats_name(args, i);
    Command::new(&args.nats_server)
        .args(args.nats_args(i))
        .stdout(Stdio::from(log_file(&args.dir, &name)?))
        .stderr(Stdio::from(log_file(&args.dir, &name)?))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {} (install it: apt-get install nats-server)", args.nats_server))
}

fn spawn_service(args: &UpArgs, bin_dir: &Path, binary: &str, k: u16) -> anyhow::Result<Child> {
    let name = replica_name(binary, k.into());
    let mut cmd = Command::new(bin_dir.join(binary));
    cmd.env("NATS_URL", args.urls())
        .env("HSYNC_SIGNER_DIR", args.dir.join("signer"))
        .env("HSYNC_INDEX_DIR", args.dir.join("index"));
    if args.cluster > 1 && std::env::var_os("HSYNC_REPLICAS").is_none() {
        cmd.env("HSYNC_REPLICAS", args.cluster.min(3).to_string());
    }
    if k > 1 {
        // Replicas share the host: any free metrics port (it is in their $SRV.INFO).
        cmd.env("HSYNC_METRICS_ADDR", "127.0.0.1:0")
            .envs(replica_env(&args.dir, binary, k.into())?);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log_file(&args.dir, &name)?))
        .stderr(Stdio::from(log_file(&args.dir, &name)?))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))
}

fn terminate(child: &mut Child) {
    if let Some(id) = child.id() {
        let _ = kill(Pid::from_raw(id as i32), Signal::SIGTERM);
    }
}

async fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("nothing listens on port {port} after {} s", timeout.as_secs())
}

/// Waits until `replicas` instances of every service answer `$SRV.PING`.
pub async fn wait_until_ready(urls: &str, replicas: usize, timeout: Duration) -> anyhow::Result<()> {
    let mut cfg = BusConfig::for_url(urls);
    cfg.connect_timeout_s = timeout.as_secs();
    let bus = hsync_bus::Bus::connect(&cfg, "hsync-up").await?;
    let deadline = Instant::now() + timeout;
    loop {
        let mut missing = Vec::new();
        for name in services::ALL {
            let answers = hsync_client::discovery::collect(bus.primary(), "PING", name, Duration::from_millis(200)).await?;
            if answers.len() < replicas {
                missing.push(format!("{name} ({} of {replicas})", answers.len()));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("services not answering after {} s: {}", timeout.as_secs(), missing.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Re-runs `hsync up` in its own process group with its output in the log directory.
async fn detach(args: &UpArgs) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("up")
        .arg("--port")
        .arg(args.port.to_string())
        .arg("--dir")
        .arg(&args.dir)
        .arg("--cluster")
        .arg(args.cluster.to_string())
        .arg("--cluster-port")
        .arg(args.cluster_port.to_string())
        .arg("--monitor-port")
        .arg(args.monitor_port.to_string())
        .arg("--replicas")
        .arg(args.replicas.to_string())
        .arg("--nats-server")
        .arg(&args.nats_server);
    if let Some(b) = &args.bin_dir {
        cmd.arg("--bin-dir").arg(b);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file(&args.dir, "hsync-up")?))
        .stderr(Stdio::from(log_file(&args.dir, "hsync-up")?))
        .process_group(0)
        .spawn()
        .context("cannot start the background cluster")?;
    std::fs::write(pid_file(&args.dir), child.id().to_string())?;
    wait_for_port(args.port, Duration::from_secs(30)).await?;
    wait_until_ready(&args.urls(), args.replicas as usize, Duration::from_secs(180)).await?;
    eprintln!(
        "HyperSync is up in the background (pid {}): NATS at {}, logs in {}/logs; stop it with `hsync down --dir {}`",
        child.id(),
        args.urls(),
        args.dir.display(),
        args.dir.display()
    );
    Ok(())
}

pub fn down(dir: &Path) -> anyhow::Result<()> {
    let path = pid_file(dir);
    let pid: i32 = std::fs::read_to_string(&path)
        .with_context(|| format!("no cluster started with --detach in {} ({} missing)", dir.display(), path.display()))?
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a pid", path.display()))?;
    let pid = Pid::from_raw(pid);
    if kill(pid, Signal::SIGTERM).is_err() {
        let _ = std::fs::remove_file(&path);
        eprintln!("the cluster (pid {pid}) was not running");
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    while kill(pid, None).is_ok() {
        if Instant::now() > deadline {
            anyhow::bail!("the cluster (pid {pid}) did not stop within 40 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&path);
    eprintln!("stopped");
    Ok(())
}
