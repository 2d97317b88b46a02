//! `hsync policy ...`: store, show, list, delete and test Cedar policies and the schema.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use hsync_bus::{BusConfig, BusError};
use hsync_client::policies::PolicyAdmin;
use hsync_protocol::policy::PolicyQuery;

use crate::commands::{connect, print_json, read_input, report_error};

/// Exit code of `policy test` when the evaluator denies.
const DENIED: u8 = 3;
/// Exit code when the policy (or schema) asked for does not exist.
const NOT_FOUND: u8 = 4;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Store (or replace) a policy, validated first; wait until the evaluators apply it.
    ///
    /// FILE (or - for stdin) holds one static Cedar policy. It is parsed and, when a schema
    /// is stored, validated strictly against it before anything is written; a rejected
    /// policy leaves the bucket unchanged and Cedar's diagnostics are printed. Then the
    /// command waits until every policy-evaluator replica has applied the new revision.
    Put {
        /// Policy id: 1-128 ASCII letters, digits, '-' or '_'.
        id: String,
        /// The Cedar text (file, or - for stdin).
        file: PathBuf,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Print a policy's Cedar text (its revision goes to stderr).
    Get { id: String },
    /// Every stored policy with its revision, and the schema's revision.
    List {
        /// Print JSON: {"schema_revision", "policies": [{"id", "revision"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Delete a policy. With no policy left, the evaluators permit every step.
    Delete {
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// The Cedar schema (human-readable syntax) policies are validated against.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Ask the running policy-evaluator for a decision: exit 0 on allow, 3 on deny.
    ///
    /// Prints ALLOW or DENY, the policies that decided and any evaluation errors.
    /// Exit codes: 0 allow, 3 deny, 1 error (no evaluator, bad request).
    Test {
        /// A policy query as JSON (file, or - for stdin), e.g. {"principal": "alice",
        /// "stage": "pre", "operator": "geo.poincare.distance", "capabilities": ["geometry"],
        /// "context": {"job_id": "j1", "node_id": "n1"}}; "stage" is "pre" or "post".
        request: PathBuf,
        /// Print the decision as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Store (or replace) the schema, after checking every stored policy against it.
    ///
    /// FILE (or - for stdin) is a Cedar schema in human-readable syntax. If it does not
    /// parse, or a stored policy does not validate against it, nothing is written and the
    /// first failing policy is named with Cedar's diagnostics.
    Put {
        file: PathBuf,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Print the stored schema (its revision goes to stderr).
    Get,
}

/// Options of every write.
#[derive(Args, Debug, Clone, Copy)]
pub struct WriteArgs {
    /// Write only if the stored revision is N (0: only if it does not exist yet), as shown
    /// by `list` and `get`: refuses to overwrite a change made since you read it.
    #[arg(long, value_name = "N")]
    if_revision: Option<u64>,
    /// Return once stored, without waiting for the evaluators to apply the change.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for every evaluator replica to apply the change.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
}

pub async fn run(cfg: &BusConfig, cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Put { id, file, write } => {
            let text = read_text(&file)?;
            let admin = PolicyAdmin::new(connect(cfg).await?);
            let stored = admin.put(&id, &text, write.if_revision).await;
            finish_write(&admin, stored, &format!("policy {id} stored"), write).await
        }
        PolicyCommand::Get { id } => {
            let admin = PolicyAdmin::new(connect(cfg).await?);
            show(admin.get(&id).await, &format!("policy {id}"))
        }
        PolicyCommand::List { json } => list(cfg, json).await,
        PolicyCommand::Delete { id, write } => {
            let admin = PolicyAdmin::new(connect(cfg).await?);
            let deleted = admin.delete(&id, write.if_revision).await;
            if matches!(&deleted, Err(BusError::Remote(e)) if e.code == hsync_protocol::ErrorCode::NotFound) {
                eprintln!("there is no policy {id}");
                return Ok(ExitCode::from(NOT_FOUND));
            }
            let code = finish_write(&admin, deleted, &format!("policy {id} deleted"), write).await?;
            // Losing the last policy switches the evaluators to permit-all: say so.
            if matches!(admin.list().await, Ok(left) if left.is_empty()) {
                eprintln!("warning: no policy is stored any more, so every step is permitted");
            }
            Ok(code)
        }
        PolicyCommand::Schema(SchemaCommand::Put { file, write }) => {
            let text = read_text(&file)?;
            let admin = PolicyAdmin::new(connect(cfg).await?);
            let stored = admin.put_schema(&text, write.if_revision).await;
            finish_write(&admin, stored, "schema stored", write).await
        }
        PolicyCommand::Schema(SchemaCommand::Get) => {
            let admin = PolicyAdmin::new(connect(cfg).await?);
            show(admin.get_schema().await, "the schema")
        }
        PolicyCommand::Test { request, json } => test(cfg, &request, json).await,
    }
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    String::from_utf8(read_input(path)?).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// Reports a write and, unless told not to, waits for the evaluators to apply it.
async fn finish_write(
    admin: &PolicyAdmin,
    written: Result<u64, BusError>,
    what: &str,
    args: WriteArgs,
) -> anyhow::Result<ExitCode> {
    let revision = match written {
        Ok(r) => r,
        Err(e) => return Ok(report_error(e)),
    };
    if args.no_wait {
        println!("{what} at revision {revision}");
        return Ok(ExitCode::SUCCESS);
    }
    match admin.wait_applied(revision, Duration::from_millis(args.timeout_ms)).await {
        Ok(0) => {
            println!("{what} at revision {revision}");
            eprintln!("warning: no policy-evaluator answered; the change takes effect when one starts");
            Ok(ExitCode::SUCCESS)
        }
        Ok(n) => {
            println!("{what} at revision {revision}; applied by {n} evaluator replica(s)");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{what} at revision {revision}, but:");
            Ok(report_error(e))
        }
    }
}

fn show(found: Result<Option<(String, u64)>, BusError>, what: &str) -> anyhow::Result<ExitCode> {
    match found {
        Ok(Some((text, revision))) => {
            eprintln!("{what} at revision {revision}");
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => {
            eprintln!("{what} is not stored");
            Ok(ExitCode::from(NOT_FOUND))
        }
        Err(e) => Ok(report_error(e)),
    }
}

async fn list(cfg: &BusConfig, json: bool) -> anyhow::Result<ExitCode> {
    let admin = PolicyAdmin::new(connect(cfg).await?);
    let (policies, schema) = match (admin.list().await, admin.get_schema().await) {
        (Ok(p), Ok(s)) => (p, s.map(|(_, rev)| rev)),
        (Err(e), _) | (_, Err(e)) => return Ok(report_error(e)),
    };
    if json {
        let policies: Vec<_> = policies
            .iter()
            .map(|(id, revision)| serde_json::json!({ "id": id, "revision": revision }))
            .collect();
        print_json(&serde_json::json!({ "schema_revision": schema, "policies": policies }))?;
        return Ok(ExitCode::SUCCESS);
    }
    match schema {
        Some(rev) => println!("schema at revision {rev}"),
        None => println!("no schema: policies are parsed but not validated"),
    }
    if policies.is_empty() {
        println!("no policies: every step is permitted");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<40} revision", "policy");
    for (id, revision) in &policies {
        println!("{id:<40} {revision}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn test(cfg: &BusConfig, path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let query: PolicyQuery = serde_json::from_slice(&read_input(path)?).with_context(|| {
        format!(
            "{} is not a policy query ({{\"principal\", \"stage\": \"pre\"|\"post\", \"operator\", \"capabilities\", \"context\"}})",
            path.display()
        )
    })?;
    let admin = PolicyAdmin::new(connect(cfg).await?);
    let decision = match admin.test(query).await {
        Ok(d) => d,
        Err(e) => return Ok(report_error(e)),
    };
    if json {
        print_json(&decision)?;
    } else {
        println!("{}", if decision.allowed { "ALLOW" } else { "DENY" });
        println!("decided by: {}", decision.policies.join(", "));
        for e in &decision.errors {
            println!("error: {e}");
        }
    }
    Ok(if decision.allowed { ExitCode::SUCCESS } else { ExitCode::from(DENIED) })
}
