//! nats-server with the production accounts and subject permissions
//! (`deploy/nats/accounts.conf`), and the five services each connected as its own user.
//!
//! The server runs from a config generated in a temporary directory (loopback client and
//! monitoring ports, JetStream store in the directory) that includes the repository's
//! `accounts.conf`, with a random password per user in its environment
//! (`HSYNC_<USER>_PASSWORD`, as in production). Everything is killed on drop.
//!
//! nats-server 2.9 joins an `include` path to the including file's directory, an absolute
//! one too, so the config includes a symlink to the repository's file next to it.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hsync_bus::{Bus, BusConfig};
use hsync_protocol::names::services;

use crate::cluster::{bin_dir, SERVICE_BINARIES};
use crate::free_port;

/// Every user of accounts.conf and the variable its password is read from.
pub const USERS: [(&str, &str); 7] = [
    ("client", "HSYNC_CLIENT_PASSWORD"),
    ("admin", "HSYNC_ADMIN_PASSWORD"),
    ("operator-runner", "HSYNC_RUNNER_PASSWORD"),
    ("policy-evaluator", "HSYNC_POLICY_EVALUATOR_PASSWORD"),
    ("geometry-cache", "HSYNC_GEOMETRY_CACHE_PASSWORD"),
    ("receipt-signer", "HSYNC_RECEIPT_SIGNER_PASSWORD"),
    ("indexer", "HSYNC_INDEXER_PASSWORD"),
];

/// `$HSYNC_ACCOUNTS_CONF` if set (to try a variant), else `deploy/nats/accounts.conf`,
/// found by walking up from this crate's directory.
pub fn accounts_conf() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("HSYNC_ACCOUNTS_CONF").filter(|p| !p.is_empty()) {
        let path = std::path::absolute(&path)?;
        anyhow::ensure!(
            path.is_file(),
            "HSYNC_ACCOUNTS_CONF={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .map(|d| d.join("deploy/nats/accounts.conf"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "deploy/nats/accounts.conf not found in {} or any directory above it: the secured \
                 cluster tests the repository's NATS accounts and cannot run without that file",
                start.display()
            )
        })
}

/// Letters and digits, starting with a letter (nats-server reads `$VAR` as a config value).
fn random_password() -> String {
    let s = RandomState::new();
    format!("p{:016x}{:016x}", s.hash_one(1u8), s.hash_one(2u8))
}

/// A connection as one user that remembers the errors the server sent it
/// (`-ERR 'Permissions Violation for Publish to "…"'`).
pub struct UserConnection {
    pub client: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl UserConnection {
    /// The server errors received so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for a server error containing `needle` (case-insensitive).
    pub async fn wait_error(&self, needle: &str, timeout: Duration) -> Option<String> {
        let needle = needle.to_lowercase();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self
                .errors()
                .into_iter()
                .find(|e| e.to_lowercase().contains(&needle))
            {
                return Some(e);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub struct SecuredCluster {
    port: u16,
    monitor_port: u16,
    passwords: BTreeMap<&'static str, String>,
    nats: Child,
    services: Vec<(String, Child)>,
    pub admin: Arc<Bus>,
    // Last: removed after the processes are killed (see Drop).
    pub dir: tempfile::TempDir,
}

impl SecuredCluster {
    /// Starts nats-server and the five services and waits until all five answer
    /// `$SRV.PING` (asked as `admin`).
    pub async fn start() -> anyhow::Result<SecuredCluster> {
        let accounts = accounts_conf()?;
        let bins = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("hsync-secured-")
            .tempdir()?;
        std::os::unix::fs::symlink(&accounts, dir.path().join("accounts.conf"))?;
        let passwords: BTreeMap<&'static str, String> =
            USERS.iter().map(|(u, _)| (*u, random_password())).collect();

        let mut attempt = 0;
        let (nats, port, monitor_port) = loop {
            attempt += 1;
            match start_server(dir.path(), &passwords) {
                Ok(started) => break started,
                Err(e) if attempt >= 3 => return Err(e),
                Err(_) => continue, // most likely a port taken since free_port
            }
        };
        let url = format!("nats://127.0.0.1:{port}");
        let mut cfg = BusConfig::for_url(&url);
        cfg.user = Some("admin".into());
        cfg.password = Some(passwords["admin"].clone());
        cfg.connect_timeout_s = 10;
        let admin = match Bus::connect(&cfg, "secured-admin").await {
            Ok(bus) => Arc::new(bus),
            Err(e) => {
                let log = std::fs::read_to_string(dir.path().join("nats.log")).unwrap_or_default();
                let mut nats = nats;
                let _ = nats.kill();
                let _ = nats.wait();
                anyhow::bail!("admin cannot connect to the secured nats-server: {e}\n{log}");
            }
        };
        let mut cluster = SecuredCluster {
            port,
            monitor_port,
            passwords,
            nats,
            services: Vec::new(),
            admin,
            dir,
        };
        for name in SERVICE_BINARIES {
            let child = cluster.spawn(&bins, name)?;
            cluster.services.push((name.to_string(), child));
        }
        cluster.wait_ready(Duration::from_secs(40)).await?;
        Ok(cluster)
    }

    /// Service `name` connected as the NATS user of the same name. `RUST_LOG` shows the
    /// bus's debug lines: they include every error the server sends the service.
    fn spawn(&self, bins: &Path, name: &str) -> anyhow::Result<Child> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        Command::new(bins.join(name))
            .env("NATS_URL", self.url())
            .env("NATS_USER", name)
            .env("NATS_PASSWORD", self.password(name))
            .env("HSYNC_SIGNER_DIR", self.dir.path().join("signer"))
            .env("HSYNC_INDEX_DIR", self.dir.path().join("index"))
            .env("HSYNC_METRICS_ADDR", "127.0.0.1:0")
            .env("HSYNC_CONNECT_TIMEOUT_S", "20")
            .env("OTEL_SDK_DISABLED", "true")
            .env("RUST_LOG", "info,hsync_bus=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bins.join(name).display()))
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut missing = Vec::new();
            for name in services::ALL {
                let ping = Duration::from_millis(200);
                if hsync_client::discovery::collect(self.admin.primary(), "PING", name, ping)
                    .await?
                    .is_empty()
                {
                    missing.push(name);
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            for (name, child) in self.services.iter_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                        .unwrap_or_default();
                    anyhow::bail!("{name} exited ({status}) during start-up:\n{log}");
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "services not ready: {}\nnats-server log:\n{}",
                    missing.join(", "),
                    self.server_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`: the monitoring endpoint (`/varz`, `/jsz`, ...).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The password of `user` (one of [`USERS`]).
    pub fn password(&self, user: &str) -> &str {
        self.passwords
            .get(user)
            .unwrap_or_else(|| panic!("accounts.conf has no user {user}"))
    }

    /// Bus settings for connecting as `user`.
    pub fn bus_config(&self, user: &str) -> BusConfig {
        let mut cfg = BusConfig::for_url(&self.url());
        cfg.user = Some(user.to_string());
        cfg.password = Some(self.password(user).to_string());
        cfg.connect_timeout_s = 10;
        cfg
    }

    /// A [`Bus`] connected as `user` (for the typed clients of `hsync_client`).
    pub async fn bus(&self, user: &str) -> anyhow::Result<Arc<Bus>> {
        Ok(Arc::new(
            Bus::connect(&self.bus_config(user), &format!("secured-{user}")).await?,
        ))
    }

    /// A plain connection as `user` that records the errors the server sends it.
    pub async fn connect(&self, user: &str) -> anyhow::Result<UserConnection> {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        let client = async_nats::ConnectOptions::with_user_and_password(
            user.into(),
            self.password(user).into(),
        )
        .name(format!("secured-{user}"))
        .event_callback(move |event| {
            let sink = sink.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    sink.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(self.url())
        .await
        .with_context(|| format!("connecting as {user}"))?;
        Ok(UserConnection { client, errors })
    }

    /// A service's log so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// nats-server's log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// The permission refusals nats-server logged ("Publish Violation - User \"…\", Subject
    /// \"…\"", "Subscription Violation - …").
    pub fn violations(&self) -> Vec<String> {
        self.server_log()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for SecuredCluster {
    fn drop(&mut self) {
        for (_, c) in self.services.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.nats.kill();
        let _ = self.nats.wait();
    }
}

/// Writes `nats.conf` for two fresh ports, starts nats-server on it and waits (≤ 10 s) for
/// "Server is ready" and a TCP connect.
fn start_server(
    dir: &Path,
    passwords: &BTreeMap<&'static str, String>,
) -> anyhow::Result<(Child, u16, u16)> {
    let (port, monitor_port) = (free_port(), free_port());
    let store = dir.join("store");
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n\
             jetstream {{\n  store_dir: {store:?}\n}}\ninclude \"accounts.conf\"\n"
        ),
    )?;
    let log_path = dir.join("nats.log");
    let log = std::fs::File::create(&log_path)?;
    let binary = std::env::var_os("HSYNC_NATS_SERVER")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "nats-server".into());
    let mut cmd = Command::new(&binary);
    cmd.arg("-c").arg(&conf);
    for (user, var) in USERS {
        cmd.env(var, &passwords[user]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!("spawning {binary:?} (install nats-server or set HSYNC_NATS_SERVER)")
        })?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("nats-server exited during start-up ({status}):\n{log}");
        }
        if log.contains("Server is ready")
            && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        {
            return Ok((child, port, monitor_port));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("nats-server was not ready within 10 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
