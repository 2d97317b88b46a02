//! `hsync audit …`: the indexer's audit queries. Receipts come with their inclusion proof
//! and signed checkpoint, so every one printed as JSON verifies offline
//! (`hsync receipt verify`).

use std::process::ExitCode;

use hsync_bus::{BusConfig, BusError};
use hsync_client::IndexClient;
use hsync_protocol::audit::{OperatorsQuery, ReceiptPage, ReceiptsByTime, MAX_PAGE};
use hsync_protocol::operator::Provider;
use hsync_protocol::receipt::Receipt;

use crate::commands::{connect, print_json, report_error};
use crate::when;

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Print each receipt as one JSON line (verifiable offline) instead of a table.
    #[arg(long)]
    json: bool,
    /// Stop after this many receipts; pages are fetched until then.
    #[arg(long, default_value_t = 1000)]
    max: usize,
    /// Receipts per request (1-1000).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page: u32,
}

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// One receipt as JSON, by id (its leaf index) or by operation id.
    Receipt {
        #[arg(long, conflicts_with = "operation", required_unless_present = "operation")]
        id: Option<u64>,
        #[arg(long)]
        operation: Option<String>,
    },
    /// The receipts of a job, in log order.
    Job {
        job_id: String,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Receipts of operations that started in [--from, --to), in start order; times are
    /// Unix microseconds, `now`, offsets like -15m / -2h / -7d, or RFC 3339 UTC.
    Time {
        #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
        from: String,
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
        /// Only this operator's (`id@version`, as recorded, e.g. geo.poincare.distance@1).
        #[arg(long)]
        operator: Option<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// A signed checkpoint as JSON: at a tree size where a batch ended, or the latest.
    Checkpoint { tree_size: Option<u64> },
    /// Receipts, batches and tree size of the index, and how many operators it mirrors.
    Stats,
    /// One operator definition as JSON, as the indexer mirrors it from the registry.
    Operator { id: String },
    /// Registered operators ordered by id: those that declare --capability, or all.
    Operators {
        #[arg(long)]
        capability: Option<String>,
        /// Print each definition as one JSON line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn audit(cfg: &BusConfig, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let index = IndexClient::new(connect(cfg).await?);
    match cmd {
        AuditCommand::Receipt { id, operation } => {
            let found = match (id, &operation) {
                (Some(id), _) => index.receipt_by_id(id).await,
                (None, Some(op)) => index.receipt_by_operation(op).await,
                (None, None) => unreachable!("clap requires --id or --operation"),
            };
            match found {
                Ok(Some(r)) => print_json(&r).map(|_| ExitCode::SUCCESS),
                Ok(None) => {
                    match id {
                        Some(id) => eprintln!("no receipt with id {id}"),
                        None => eprintln!("no receipt for operation {} (yet)", operation.unwrap_or_default()),
                    }
                    Ok(ExitCode::from(1))
                }
                Err(e) => Ok(report_error(e)),
            }
        }
        AuditCommand::Job { job_id, list } => {
            let limit = list.page;
            print_pages(&list, |cursor| {
                let (index, job_id) = (index.clone(), job_id.clone());
                async move { index.receipts_by_job(&job_id, cursor, limit).await }
            })
            .await
        }
        AuditCommand::Time { from, to, operator, list } => {
            let (from_us, to_us) = (when::parse(&from).map_err(anyhow::Error::msg)?, when::parse(&to).map_err(anyhow::Error::msg)?);
            if from_us > to_us {
                anyhow::bail!("--from ({}) is after --to ({})", when::format(from_us), when::format(to_us));
            }
            let limit = list.page;
            print_pages(&list, |cursor| {
                let index = index.clone();
                let query = ReceiptsByTime { operator: operator.clone(), from_us, to_us, cursor, limit };
                async move { index.receipts_by_time(&query).await }
            })
            .await
        }
        AuditCommand::Checkpoint { tree_size } => match index.checkpoint(tree_size).await {
            Ok(c) => print_json(&c).map(|_| ExitCode::SUCCESS),
            Err(e) => Ok(report_error(e)),
        },
        AuditCommand::Stats => match index.stats().await {
            Ok(s) => print_json(&s).map(|_| ExitCode::SUCCESS),
            Err(e) => Ok(report_error(e)),
        },
        AuditCommand::Operator { id } => match index.operator(&id).await {
            Ok(Some(def)) => print_json(&def).map(|_| ExitCode::SUCCESS),
            Ok(None) => {
                eprintln!("no operator {id} in the registry");
                Ok(ExitCode::from(1))
            }
            Err(e) => Ok(report_error(e)),
        },
        AuditCommand::Operators { capability, json } => {
            if !json {
                println!("{:<32}  {:<8}  {:<32}  provider", "id", "version", "capabilities");
            }
            let mut query = OperatorsQuery { capability, cursor: None, limit: MAX_PAGE };
            let mut printed = 0usize;
            loop {
                let page = match index.operators(&query).await {
                    Ok(p) => p,
                    Err(e) => return Ok(report_error(e)),
                };
                for def in &page.operators {
                    if json {
                        println!("{}", serde_json::to_string(def)?);
                    } else {
                        let provider = match &def.provider {
                            Provider::Builtin => "builtin".to_string(),
                            Provider::Nats { subject, .. } => format!("nats {subject}"),
                        };
                        println!("{:<32}  {:<8}  {:<32}  {provider}", def.id, def.version, def.capabilities.join(","));
                    }
                    printed += 1;
                }
                match page.next_cursor {
                    Some(next) => query.cursor = Some(next),
                    None => break,
                }
            }
            if printed == 0 {
                eprintln!("no operators");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Follows the cursors until the last page or `--max` receipts, printing as it goes.
async fn print_pages<F, Fut>(list: &ListArgs, mut fetch: F) -> anyhow::Result<ExitCode>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<ReceiptPage, BusError>>,
{
    if !list.json {
        println!("{:>10}  {:<27}  {:<28}  {:<8}  {:<24}  operation", "id", "started", "operator", "outcome", "job");
    }
    let (mut cursor, mut printed) = (None, 0usize);
    loop {
        let page = match fetch(cursor.take()).await {
            Ok(p) => p,
            Err(e) => return Ok(report_error(e)),
        };
        for r in &page.receipts {
            if printed == list.max {
                eprintln!("stopped after --max {} receipts", list.max);
                return Ok(ExitCode::SUCCESS);
            }
            print_receipt(r, list.json)?;
            printed += 1;
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    if printed == 0 {
        eprintln!("no receipts");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_receipt(r: &Receipt, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    match r.record() {
        Ok(rec) => println!(
            "{:>10}  {:<27}  {:<28}  {:<8}  {:<24}  {}",
            r.leaf_index,
            when::format(rec.started_at_us),
            rec.operator,
            format!("{:?}", rec.outcome).to_lowercase(),
            rec.job_id,
            r.operation_id
        ),
        Err(e) => println!("{:>10}  (record does not decode: {e})  {}", r.leaf_index, r.operation_id),
    }
    Ok(())
}
