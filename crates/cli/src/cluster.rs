//! `hsync up` / `hsync down`: a local cluster (nats-server with JetStream plus the five
//! services) as child processes, for development, demos and tests.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use hsync_bus::{BusConfig, Shutdown};
use hsync_protocol::names::services;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// The service binaries, in start order (consumers of a stream before its producers).
const SERVICE_BINARIES: [&str; 5] = ["indexer", "receipt-signer", "policy-evaluator", "geometry-cache", "operator-runner"];

#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Client port of the local nats-server.
    #[arg(long, default_value_t = 4222)]
    port: u16,
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

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(args.dir.join("logs")).with_context(|| format!("cannot create {}", args.dir.display()))?;
    if std::net::TcpStream::connect(("127.0.0.1", args.port)).is_ok() {
        anyhow::bail!(
            "port {} is already in use: is a cluster already up? Stop it with `hsync down --dir {}` or pick --port",
            args.port,
            args.dir.display()
        );
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

    let mut nats = Command::new(&args.nats_server)
        .args(["-a", "127.0.0.1", "-p", &args.port.to_string(), "-js", "-sd"])
        .arg(args.dir.join("nats"))
        .stdout(Stdio::from(log_file(&args.dir, "nats-server")?))
        .stderr(Stdio::from(log_file(&args.dir, "nats-server")?))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {} (install it: apt-get install nats-server)", args.nats_server))?;
    wait_for_port(args.port, Duration::from_secs(15)).await?;
    eprintln!("nats-server (JetStream) listening on {}", url(args.port));

    let mut children: Vec<(&str, Child, u32)> = Vec::new();
    for name in SERVICE_BINARIES {
        children.push((name, spawn_service(&args, &bin_dir, name)?, 0));
    }
    let logs = args.dir.join("logs");
    match wait_until_ready(args.port, Duration::from_secs(120)).await {
        Ok(()) => eprintln!(
            "HyperSync is up: NATS at {}, logs in {}; Ctrl-C stops everything",
            url(args.port),
            logs.display()
        ),
        Err(e) => eprintln!("warning: {e}; see the logs in {}", logs.display()),
    }

    // Supervise: restart a service that dies, a few times, until shutdown.
    loop {
        tokio::select! {
            _ = signal.wait() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        for (name, child, restarts) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                if *restarts >= 5 {
                    continue;
                }
                *restarts += 1;
                eprintln!("{name} exited ({status}); restarting (attempt {restarts}/5); see {}/{name}.log", logs.display());
                *child = spawn_service(&args, &bin_dir, name)?;
            }
        }
        if let Ok(Some(status)) = nats.try_wait() {
            eprintln!("nats-server exited ({status}); stopping");
            break;
        }
    }

    eprintln!("stopping services");
    for (_, child, _) in children.iter_mut().rev() {
        terminate(child);
    }
    for (name, child, _) in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(15), child.wait()).await.is_err() {
            eprintln!("{name} did not stop in 15 s; killing it");
            let _ = child.kill().await;
        }
    }
    terminate(&mut nats);
    if tokio::time::timeout(Duration::from_secs(10), nats.wait()).await.is_err() {
        let _ = nats.kill().await;
    }
    let _ = std::fs::remove_file(pid_file(&args.dir));
    eprintln!("stopped");
    Ok(())
}

fn spawn_service(args: &UpArgs, bin_dir: &Path, name: &str) -> anyhow::Result<Child> {
    Command::new(bin_dir.join(name))
        .env("NATS_URL", url(args.port))
        .env("HSYNC_SIGNER_DIR", args.dir.join("signer"))
        .env("HSYNC_INDEX_DIR", args.dir.join("index"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file(&args.dir, name)?))
        .stderr(Stdio::from(log_file(&args.dir, name)?))
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

/// Waits until every service answers `$SRV.PING`.
pub async fn wait_until_ready(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let mut cfg = BusConfig::for_url(&url(port));
    cfg.connect_timeout_s = timeout.as_secs();
    let bus = hsync_bus::Bus::connect(&cfg, "hsync-up").await?;
    let deadline = Instant::now() + timeout;
    loop {
        let mut missing = Vec::new();
        for name in services::ALL {
            let answers = hsync_client::discovery::collect(bus.primary(), "PING", name, Duration::from_millis(200)).await?;
            if answers.is_empty() {
                missing.push(name);
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
    wait_until_ready(args.port, Duration::from_secs(120)).await?;
    eprintln!(
        "HyperSync is up in the background (pid {}): NATS at {}, logs in {}/logs; stop it with `hsync down --dir {}`",
        child.id(),
        url(args.port),
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
