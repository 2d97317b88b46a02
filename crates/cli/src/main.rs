//! `hsync`: submit jobs, manage operators and policies, fetch and verify receipts, check
//! services, and run a local cluster for development.

mod audit;
mod bench;
mod cluster;
mod commands;
mod geo;
mod policy;
use hsync_metrics::procstat;
mod when;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hsync_bus::BusConfig;

#[derive(Parser, Debug)]
#[command(name = "hsync", version, about = "HyperSync command-line tool")]
struct Cli {
    #[command(flatten)]
    bus: BusConfig,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start nats-server (JetStream) and the five services; Ctrl-C stops them all.
    Up(cluster::UpArgs),
    /// Stop a cluster started with `hsync up --detach`.
    Down {
        /// State directory given to `hsync up`.
        #[arg(long, default_value = ".hsync")]
        dir: PathBuf,
    },
    /// Submit a job (JSON file, or - for stdin), wait, print the JobResult as JSON.
    Run {
        job: PathBuf,
        /// Wait for the steps' receipts and include them.
        #[arg(long)]
        wait_receipts: bool,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// Submit a job on the durable path (JetStream); print its id, or its result with --wait.
    Submit {
        job: PathBuf,
        /// Wait for the result and print it.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this many milliseconds (the job still runs).
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// Print the stored result of a durable job (kept for a day).
    Result { job_id: String },
    /// The operator registry: list, show, register, remove.
    #[command(subcommand)]
    Operators(OperatorsCommand),
    /// Cedar policies and their schema: put, get, list, delete, test (exit 3 on deny).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Hyperbolic geometry: embed a tree and save the points; inspect embedding tables.
    #[command(subcommand)]
    Geo(geo::GeoCommand),
    /// Receipts: fetch, verify offline, get the log's verifier key.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
    /// The receipt log as a whole.
    #[command(subcommand)]
    Log(LogCommand),
    /// Audit queries: receipts by id, operation, job, operator and time; checkpoints; statistics.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Ping every service through $SRV and show their stats.
    Status {
        /// Print the raw $SRV answers as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks: each optimization on and off, side by side, on fresh local clusters.
    Bench(bench::BenchArgs),
    /// Run the example jobs, print their results and verify one receipt offline.
    Demo {
        /// Directory of example jobs.
        #[arg(long, default_value = "examples/jobs")]
        jobs: PathBuf,
        /// Verifier key file (written by the receipt-signer).
        #[arg(long, default_value = ".hsync/signer/signer.vkey")]
        key: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum OperatorsCommand {
    /// Every registered operator: id, version, provider, capabilities.
    List {
        /// Print the definitions as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One operator's definition as JSON.
    Show { id: String },
    /// Register (or replace) an operator served by your own provider: an OperatorDef as
    /// JSON (file or -), with provider {"kind": "nats", "subject": "..."}.
    Register { def: PathBuf },
    /// Remove an operator registered with `register`.
    Remove { id: String },
}

#[derive(Subcommand, Debug)]
enum LogCommand {
    /// Fetch the checkpoints at two tree sizes with the consistency proof between them
    /// from the indexer, and verify offline that the later log extends the earlier one:
    /// both signatures, then the proof. Exit 1 naming the step that failed.
    Consistency {
        /// Tree size of the earlier checkpoint (a size at which a batch ended).
        #[arg(long)]
        from: u64,
        /// Tree size of the later checkpoint.
        #[arg(long)]
        to: u64,
        /// Verifier key or keyring file (one key per line), e.g. .hsync/signer/verifier.vkeys
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ReceiptCommand {
    /// Fetch the receipt of an operation from the indexer (JSON on stdout).
    Get { operation_id: String },
    /// Verify a receipt (JSON file or -) offline: leaf → inclusion proof → root → signature.
    Verify {
        receipt: PathBuf,
        /// Verifier key file (`<name>+<id>+<key>`), e.g. .hsync/signer/signer.vkey, or a
        /// keyring with one key per line (.hsync/signer/verifier.vkeys: the current key
        /// and those rotated out)
        #[arg(long)]
        key: PathBuf,
    },
    /// Print the log's verifier key, as served by the receipt-signer.
    Key,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HSYNC_CLI_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    restore_default_sigpipe();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hsync: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hsync: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match cli.command {
        Command::Up(args) => cluster::up(args).await.map(|_| ExitCode::SUCCESS),
        Command::Down { dir } => cluster::down(&dir).map(|_| ExitCode::SUCCESS),
        Command::Run {
            job,
            wait_receipts,
            timeout_ms,
        } => commands::run(&cli.bus, &job, wait_receipts, timeout_ms).await,
        Command::Submit { job, wait, timeout_ms } => commands::submit(&cli.bus, &job, wait, timeout_ms).await,
        Command::Result { job_id } => commands::result(&cli.bus, &job_id).await,
        Command::Operators(OperatorsCommand::List { json }) => commands::operators_list(&cli.bus, json).await,
        Command::Operators(OperatorsCommand::Show { id }) => commands::operators_show(&cli.bus, &id).await,
        Command::Operators(OperatorsCommand::Register { def }) => commands::operators_register(&cli.bus, &def).await,
        Command::Operators(OperatorsCommand::Remove { id }) => commands::operators_remove(&cli.bus, &id).await,
        Command::Policy(cmd) => policy::run(&cli.bus, cmd).await,
        Command::Geo(cmd) => geo::run(&cli.bus, cmd).await,
        Command::Receipt(ReceiptCommand::Get { operation_id }) => commands::receipt_get(&cli.bus, &operation_id).await,
        Command::Receipt(ReceiptCommand::Verify { receipt, key }) => commands::receipt_verify(&receipt, &key),
        Command::Log(LogCommand::Consistency { from, to, key }) => commands::log_consistency(&cli.bus, from, to, &key).await,
        Command::Receipt(ReceiptCommand::Key) => commands::receipt_key(&cli.bus).await,
        Command::Audit(cmd) => audit::audit(&cli.bus, cmd).await,
        Command::Status { json } => commands::status(&cli.bus, json).await,
        Command::Demo { jobs, key } => commands::demo(&cli.bus, &jobs, &key).await,
        Command::Bench(args) => bench::bench(args).await,
    }
}

/// Rust ignores SIGPIPE, so `hsync audit stats | head -1` made `println!` panic once the
/// reader went away. Like other Unix tools, end quietly instead.
fn restore_default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL installs no
    // handler code.
    #[allow(unsafe_code)]
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
