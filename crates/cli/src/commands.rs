//! The client commands: run, receipt get/verify/key, status, demo.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hsync_bus::{Bus, BusConfig, BusError};
use hsync_client::registry::OperatorRegistry;
use hsync_client::{discovery, IndexClient, JobClient};
use hsync_protocol::operator::{OperatorDef, Provider};
use hsync_protocol::job::{Job, JobResult, JobStatus};
use hsync_protocol::names::services;
use hsync_protocol::receipt::Receipt;
use hsync_receipts::note::VerifierKey;

/// Largest input file accepted (a job, a receipt or a key).
const MAX_INPUT: u64 = 64 * 1024 * 1024;

/// Reads a file, or stdin for `-`, with a size bound.
pub(crate) fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().take(MAX_INPUT + 1).read_to_end(&mut buf).context("reading stdin")?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("cannot open {}", path.display()))?
            .take(MAX_INPUT + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    anyhow::ensure!(buf.len() as u64 <= MAX_INPUT, "{} is larger than {MAX_INPUT} bytes", path.display());
    Ok(buf)
}

fn read_job(path: &Path) -> anyhow::Result<Job> {
    let bytes = read_input(path)?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not a valid job", path.display()))
}

/// CLI connections give up sooner than services: a person is waiting.
pub(crate) async fn connect(cfg: &BusConfig) -> anyhow::Result<Arc<Bus>> {
    let mut cfg = cfg.clone();
    cfg.connect_timeout_s = cfg.connect_timeout_s.min(10);
    cfg.pool_size = 1;
    Ok(Arc::new(Bus::connect(&cfg, "hsync-cli").await?))
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints a remote error as JSON on stderr and picks the exit code.
pub(crate) fn report_error(e: BusError) -> ExitCode {
    let reply = e.to_reply();
    eprintln!("{}", serde_json::to_string_pretty(&reply).unwrap_or_else(|_| reply.to_string()));
    ExitCode::from(1)
}

pub async fn run(cfg: &BusConfig, path: &Path, wait_receipts: bool, timeout_ms: u64) -> anyhow::Result<ExitCode> {
    let mut job = read_job(path)?;
    job.wait_receipts |= wait_receipts;
    let bus = connect(cfg).await?;
    match JobClient::new(bus).run(&job, Duration::from_millis(timeout_ms)).await {
        Ok(result) => {
            print_json(&result)?;
            Ok(if result.status == JobStatus::Succeeded { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
        Err(e) => Ok(report_error(e)),
    }
}

/// Exit code when a durable job has no result yet.
const NO_RESULT_YET: u8 = 4;

fn result_exit_code(result: &JobResult) -> ExitCode {
    if result.status == JobStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

/// Durable path: publish to the jobs stream; print the job id (and, with `wait`, the result).
pub async fn submit(cfg: &BusConfig, path: &Path, wait: bool, timeout_ms: u64) -> anyhow::Result<ExitCode> {
    let job = read_job(path)?;
    let bus = connect(cfg).await?;
    let client = JobClient::new(bus);
    let job_id = match client.submit(&job).await {
        Ok(id) => id,
        Err(e) => return Ok(report_error(e)),
    };
    if !wait {
        println!("{job_id}");
        return Ok(ExitCode::SUCCESS);
    }
    match client.wait_result(&job_id, Duration::from_millis(timeout_ms)).await {
        Ok(Some(result)) => {
            print_json(&result)?;
            Ok(result_exit_code(&result))
        }
        Ok(None) => {
            eprintln!("job {job_id} is accepted (durable) but has no result after {timeout_ms} ms; later: hsync result {job_id}");
            Ok(ExitCode::from(NO_RESULT_YET))
        }
        Err(e) => Ok(report_error(e)),
    }
}

/// The stored result of a durable job.
pub async fn result(cfg: &BusConfig, job_id: &str) -> anyhow::Result<ExitCode> {
    let bus = connect(cfg).await?;
    match JobClient::new(bus).result(job_id).await {
        Ok(Some(result)) => {
            print_json(&result)?;
            Ok(result_exit_code(&result))
        }
        Ok(None) => {
            eprintln!("no result for job {job_id} (not finished, not submitted on the durable path, or older than a day)");
            Ok(ExitCode::from(NO_RESULT_YET))
        }
        Err(e) => Ok(report_error(e)),
    }
}

pub async fn operators_list(cfg: &BusConfig, json: bool) -> anyhow::Result<ExitCode> {
    let bus = connect(cfg).await?;
    let defs = match OperatorRegistry::new(bus).list().await {
        Ok(d) => d,
        Err(e) => return Ok(report_error(e)),
    };
    if json {
        print_json(&defs)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<26} {:<8} {:<34} capabilities", "operator", "version", "provider");
    for d in &defs {
        let provider = match &d.provider {
            Provider::Builtin => "built-in".to_string(),
            Provider::Nats { subject, batch_subject: None } => format!("nats {subject}"),
            Provider::Nats { subject, batch_subject: Some(_) } => format!("nats {subject} (batched)"),
        };
        println!("{:<26} {:<8} {:<34} {}", d.id, d.version, provider, d.capabilities.join(","));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn operators_show(cfg: &BusConfig, id: &str) -> anyhow::Result<ExitCode> {
    let bus = connect(cfg).await?;
    match OperatorRegistry::new(bus).get(id).await {
        Ok(Some(def)) => {
            print_json(&def)?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => {
            eprintln!("no operator {id} is registered");
            Ok(ExitCode::from(4))
        }
        Err(e) => Ok(report_error(e)),
    }
}

pub async fn operators_register(cfg: &BusConfig, path: &Path) -> anyhow::Result<ExitCode> {
    let bytes = read_input(path)?;
    let def: OperatorDef =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a valid operator definition", path.display()))?;
    let bus = connect(cfg).await?;
    match OperatorRegistry::new(bus).register(&def).await {
        Ok(()) => {
            println!("registered {}", def.qualified_id());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(report_error(e)),
    }
}

pub async fn operators_remove(cfg: &BusConfig, id: &str) -> anyhow::Result<ExitCode> {
    let bus = connect(cfg).await?;
    match OperatorRegistry::new(bus).remove(id).await {
        Ok(true) => {
            println!("removed {id}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(false) => {
            eprintln!("no operator {id} is registered");
            Ok(ExitCode::from(4))
        }
        Err(e) => Ok(report_error(e)),
    }
}

pub async fn receipt_get(cfg: &BusConfig, operation_id: &str) -> anyhow::Result<ExitCode> {
    let bus = connect(cfg).await?;
    match IndexClient::new(bus).receipt_by_operation(operation_id).await {
        Ok(Some(r)) => {
            print_json(&r)?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => {
            eprintln!("no receipt for operation {operation_id} (yet)");
            Ok(ExitCode::from(1))
        }
        Err(e) => Ok(report_error(e)),
    }
}

pub async fn receipt_key(cfg: &BusConfig) -> anyhow::Result<ExitCode> {
    let bus = connect(cfg).await?;
    match IndexClient::new(bus).verifier_keys().await {
        Ok(k) => {
            for key in k.keys {
                println!("{key}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(report_error(e)),
    }
}

/// What an offline verification established.
pub struct Verified {
    pub summary: String,
}

/// leaf → inclusion proof → checkpoint root → signature, with no network.
/// The checkpoint may be signed by any of `keys` (the current key and retired ones).
pub fn verify(receipt: &Receipt, keys: &[VerifierKey]) -> anyhow::Result<Verified> {
    let proof: Vec<[u8; 32]> = receipt.inclusion_proof.iter().map(|h| h.0).collect();
    let cp = hsync_receipts::verify::verify_receipt_with_any(&receipt.leaf.0, receipt.leaf_index, &proof, &receipt.checkpoint, keys)
        .map_err(|e| anyhow::anyhow!("verification failed: {e}"))?;
    anyhow::ensure!(
        cp.size == receipt.tree_size,
        "verification failed: the receipt claims tree size {} but its checkpoint is for size {}",
        receipt.tree_size,
        cp.size
    );
    let record = receipt
        .record()
        .map_err(|e| anyhow::anyhow!("verification failed: the leaf is not an operation record: {e}"))?;
    anyhow::ensure!(
        record.operation_id == receipt.operation_id,
        "verification failed: the receipt names operation {} but its leaf is operation {}",
        receipt.operation_id,
        record.operation_id
    );
    Ok(Verified {
        summary: format!(
            "receipt verified: operation {} (job {}, node {}, operator {}, outcome {:?}) is leaf {} of log `{}` at size {}, root {}, signed by {}",
            record.operation_id,
            record.job_id,
            record.node_id,
            record.operator,
            record.outcome,
            receipt.leaf_index,
            cp.origin,
            cp.size,
            hex_of(&cp.root),
            keys.iter()
                .find(|k| hsync_receipts::note::open_checkpoint(&receipt.checkpoint, k).is_ok())
                .map_or_else(String::new, |k| k.to_string())
        ),
    })
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One verifier key per line (blank lines and `#` comments ignored): a single key file
/// or a keyring such as the signer's verifier.vkeys.
fn load_keys(path: &Path) -> anyhow::Result<Vec<VerifierKey>> {
    let text = String::from_utf8(read_input(path)?).with_context(|| format!("{} is not text", path.display()))?;
    let keys = hsync_receipts::keys::parse_verifier_keys(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a verifier key file: {}", path.display(), e.0))?;
    anyhow::ensure!(!keys.is_empty(), "{} holds no verifier key", path.display());
    Ok(keys)
}

pub async fn log_consistency(cfg: &BusConfig, from: u64, to: u64, key_path: &Path) -> anyhow::Result<ExitCode> {
    let keys = load_keys(key_path)?;
    let bus = connect(cfg).await?;
    let reply = match IndexClient::new(bus).consistency(from, to).await {
        Ok(r) => r,
        Err(e) => return Ok(report_error(e)),
    };
    let proof: Vec<[u8; 32]> = reply.proof.iter().map(|h| h.0).collect();
    match hsync_receipts::verify::verify_checkpoint_consistency(&reply.from.signed_note, &reply.to.signed_note, &proof, &keys) {
        Ok((a, b)) if a.size == from && b.size == to => {
            println!(
                "consistent: log `{}` at size {} (root {}) extends size {} (root {}); proof of {} hashes",
                b.origin,
                b.size,
                hex_of(&b.root),
                a.size,
                hex_of(&a.root),
                proof.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok((a, b)) => {
            eprintln!("verification failed: asked for sizes {from} and {to}, the checkpoints are for {} and {}", a.size, b.size);
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("verification failed: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

pub fn receipt_verify(path: &Path, key_path: &Path) -> anyhow::Result<ExitCode> {
    let receipt: Receipt = serde_json::from_slice(&read_input(path)?)
        .with_context(|| format!("{} is not a receipt", path.display()))?;
    let keys = load_keys(key_path)?;
    match verify(&receipt, &keys) {
        Ok(v) => {
            println!("{}", v.summary);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

pub async fn status(cfg: &BusConfig, json: bool) -> anyhow::Result<ExitCode> {
    let bus = connect(cfg).await?;
    let mut all_up = true;
    let mut raw = serde_json::Map::new();
    for name in services::ALL {
        let pings = discovery::collect(bus.primary(), "PING", name, Duration::from_millis(500)).await?;
        let stats = discovery::collect(bus.primary(), "STATS", name, Duration::from_millis(500)).await?;
        all_up &= !pings.is_empty();
        raw.insert(name.to_string(), serde_json::json!({ "ping": pings, "stats": stats }));
        if json {
            continue;
        }
        if pings.is_empty() {
            println!("{name:<24} DOWN");
            continue;
        }
        println!("{name:<24} up ({} replica{})", pings.len(), if pings.len() == 1 { "" } else { "s" });
        let infos = discovery::collect(bus.primary(), "INFO", name, Duration::from_millis(500)).await?;
        for info in &infos {
            if let Some(url) = info["metadata"]["metrics"].as_str() {
                println!("    metrics {url}");
            }
        }
        for s in &stats {
            // Every endpoint carries the same process figures; print them once.
            let process = &s["endpoints"][0]["data"]["process"];
            if let (Some(cpu), Some(rss)) = (process["cpu_seconds"].as_f64(), process["rss_bytes"].as_u64()) {
                println!("    process cpu {cpu:.1} s  rss {:.1} MiB  heap live {:.1} MiB", rss as f64 / 1048576.0, process["heap"]["live_bytes"].as_u64().unwrap_or(0) as f64 / 1048576.0);
            }
            for ep in s["endpoints"].as_array().into_iter().flatten() {
                let requests = ep["num_requests"].as_u64().unwrap_or(0);
                let latency = &ep["data"]["requests"]["latency_ms"];
                // The request figures are in the columns; the rest of the data after them.
                let mut data = ep["data"].clone();
                if let Some(map) = data.as_object_mut() {
                    map.remove("requests");
                    map.remove("process");
                }
                println!(
                    "    {:<28} {:<40} requests {:>8}  errors {:>5}  p50 {:>8.3} ms  p99 {:>8.3} ms  {}",
                    ep["name"].as_str().unwrap_or("?"),
                    ep["subject"].as_str().unwrap_or("?"),
                    requests,
                    ep["num_errors"].as_u64().unwrap_or(0),
                    latency["p50"].as_f64().unwrap_or(0.0),
                    latency["p99"].as_f64().unwrap_or(0.0),
                    if data.is_null() || data.as_object().is_some_and(|m| m.is_empty()) { String::new() } else { data.to_string() }
                );
            }
        }
    }
    if json {
        print_json(&raw)?;
    }
    Ok(if all_up { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub async fn demo(cfg: &BusConfig, dir: &Path, key_path: &Path) -> anyhow::Result<ExitCode> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no *.json jobs in {}", dir.display());
    let bus = connect(cfg).await?;
    let client = JobClient::new(bus);
    let mut last: Option<JobResult> = None;
    let mut ok = true;
    for f in &files {
        let mut job = read_job(f)?;
        job.wait_receipts = true;
        println!("== {} ==", f.display());
        match client.run(&job, Duration::from_secs(60)).await {
            Ok(result) => {
                ok &= result.status == JobStatus::Succeeded;
                println!("status: {:?}", result.status);
                println!("outputs: {}", serde_json::to_string_pretty(&result.outputs)?);
                for n in &result.nodes {
                    println!(
                        "  node {:<12} {:<28} {:?}{}",
                        n.node_id,
                        n.operator,
                        n.status,
                        n.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                    );
                }
                println!("trace id: {}   receipts: {}", result.trace_id, result.receipts.len());
                if !result.receipts.is_empty() {
                    last = Some(result);
                }
            }
            Err(e) => {
                ok = false;
                println!("error: {}", e.to_reply());
            }
        }
    }
    let Some(result) = last else {
        anyhow::bail!("no job produced receipts");
    };
    let receipt = &result.receipts[0];
    println!("== one receipt, verified offline against {} ==", key_path.display());
    println!("{}", serde_json::to_string_pretty(receipt)?);
    let keys = load_keys(key_path)?;
    let v = verify(receipt, &keys)?;
    println!("{}", v.summary);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(3) })
}
