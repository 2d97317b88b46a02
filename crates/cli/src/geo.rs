//! `hsync geo ...`: embed a tree through the geometry-cache (or locally) and save the
//! points as a memory-mappable embedding table; inspect such tables.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use hsync_bus::BusConfig;
use hsync_client::OperatorClient;
use hsync_protocol::operator::OperatorCall;
use hsync_protocol::Value;
use serde_json::json;

use crate::commands::{connect, print_json, read_input, report_error};

#[derive(Subcommand, Debug)]
pub enum GeoCommand {
    /// Embed a tree (or a graph, through its breadth-first spanning tree) into the
    /// Poincaré ball with Sarkar's construction; print τ, depth and quality as JSON, and
    /// save the points with --out.
    ///
    /// EDGES (or - for stdin) has one edge per line, two node numbers separated by
    /// whitespace or a comma; `#` starts a comment. Nodes are numbered from 0.
    Embed(EmbedArgs),
    /// Print an embedding table's shape and curvature (and one row with --row).
    Table {
        /// The table file.
        path: PathBuf,
        /// Also print this row's coordinates.
        #[arg(long)]
        row: Option<usize>,
    },
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Edge list file, or - for stdin.
    edges: PathBuf,
    /// Dimension of the ball.
    #[arg(long, default_value_t = 2)]
    dim: usize,
    /// Hyperbolic length of every edge; by default derived from --epsilon.
    #[arg(long)]
    tau: Option<f64>,
    /// Target worst-case distortion 1 + epsilon (when --tau is not given).
    #[arg(long, default_value_t = 0.1)]
    epsilon: f64,
    /// The node placed at the origin.
    #[arg(long, default_value_t = 0)]
    root: usize,
    /// Curvature magnitude: the ball has curvature -c.
    #[arg(long, default_value_t = 1.0)]
    c: f64,
    /// Nodes from which distortion and MAP are measured against every node (0: skip).
    #[arg(long, default_value_t = 32)]
    quality_sources: usize,
    /// Write the points to this embedding table (memory-mappable, see `hsync geo table`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compute here instead of asking the geometry-cache: for trees whose points do not
    /// fit in one NATS message, or without a running cluster.
    #[arg(long)]
    local: bool,
}

pub async fn run(bus: &BusConfig, cmd: GeoCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GeoCommand::Embed(args) => embed(bus, args).await,
        GeoCommand::Table { path, row } => table(&path, row),
    }
}

/// Parses an edge list: `u v` or `u,v` per line, `#` comments, blank lines ignored.
pub fn parse_edges(text: &str) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut edges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(|c: char| c == ',' || c.is_whitespace()).filter(|f| !f.is_empty()).collect();
        let [u, v] = fields[..] else {
            anyhow::bail!("line {}: expected two node numbers, found {:?}", i + 1, line);
        };
        let node = |s: &str| {
            s.parse::<u64>()
                .with_context(|| format!("line {}: `{s}` is not a node number (0, 1, 2, ...)", i + 1))
        };
        edges.push((node(u)?, node(v)?));
    }
    Ok(edges)
}

/// What `embed` prints and saves, from either path.
struct Embedded {
    summary: serde_json::Value,
    points: Vec<f64>,
}

async fn embed(bus: &BusConfig, args: EmbedArgs) -> anyhow::Result<ExitCode> {
    let text = String::from_utf8(read_input(&args.edges)?).context("the edge list is not UTF-8 text")?;
    let edges = parse_edges(&text)?;
    let embedded = if args.local {
        embed_locally(&edges, &args)?
    } else {
        match embed_remotely(bus, &edges, &args).await? {
            Ok(e) => e,
            Err(code) => return Ok(code),
        }
    };
    let mut summary = embedded.summary;
    if let Some(out) = &args.out {
        let rows = hsync_embeddings::write(out, args.c, args.dim, embedded.points.chunks(args.dim))
            .with_context(|| format!("cannot write the table {}", out.display()))?;
        summary["table"] = json!({"path": out.display().to_string(), "rows": rows, "dim": args.dim});
    }
    print_json(&summary)?;
    Ok(ExitCode::SUCCESS)
}

fn embed_locally(edges: &[(u64, u64)], args: &EmbedArgs) -> anyhow::Result<Embedded> {
    let nodes = edges.iter().map(|&(u, v)| u.max(v) + 1).max().unwrap_or(1) as usize;
    let options = hsync_geometry::EmbedOptions {
        dim: args.dim,
        c: args.c,
        root: args.root,
        tau: args.tau,
        epsilon: args.epsilon,
        ..Default::default()
    };
    let embedding = hsync_geometry::embed_tree(nodes, edges, &options)?;
    let points = embedding.poincare_points();
    let mut summary = json!({
        "nodes": nodes,
        "tau": embedding.tau(),
        "max_depth": embedding.max_depth(),
        "max_radius": points.max_radius,
        "clamped": points.clamped,
        "non_tree_edges": embedding.non_tree_edges(),
        "min_angle": embedding.min_angle(),
    });
    if args.quality_sources > 0 {
        let q = embedding.quality(args.quality_sources, 1);
        summary["quality"] = json!({
            "sources": q.sources,
            "pairs": q.pairs,
            "exact": q.exact,
            "average_distortion": q.average_distortion,
            "worst_distortion": q.worst_distortion,
            "mean_average_precision": q.mean_average_precision,
        });
    }
    Ok(Embedded { summary, points: points.coordinates })
}

async fn embed_remotely(bus: &BusConfig, edges: &[(u64, u64)], args: &EmbedArgs) -> anyhow::Result<Result<Embedded, ExitCode>> {
    let bus = connect(bus).await?;
    let pairs = Value::Array(
        edges
            .iter()
            .map(|&(u, v)| Value::Array(vec![Value::Int(u as i64), Value::Int(v as i64)]))
            .collect(),
    );
    let mut call_args = std::collections::BTreeMap::from([
        ("edges".to_string(), pairs),
        ("dim".to_string(), Value::Int(args.dim as i64)),
        ("root".to_string(), Value::Int(args.root as i64)),
        ("epsilon".to_string(), Value::Float(args.epsilon)),
        ("c".to_string(), Value::Float(args.c)),
        ("quality_sources".to_string(), Value::Int(args.quality_sources as i64)),
    ]);
    if let Some(tau) = args.tau {
        call_args.insert("tau".to_string(), Value::Float(tau));
    }
    let call = OperatorCall { operator: "geo.embed".into(), args: call_args, job_id: "hsync-cli".into(), node_id: "embed".into() };
    let subject = bus.names().operator("geo.embed");
    let out = match OperatorClient::new(bus).call(subject, &call).await {
        Ok(out) => out,
        Err(e) => return Ok(Err(report_error(e))),
    };
    let Value::Map(mut fields) = out.output else {
        anyhow::bail!("geo.embed answered with {}, not a map", out.output.type_name());
    };
    let points = match fields.remove("points") {
        Some(Value::Tensor(t)) => t.into_data(),
        other => anyhow::bail!("geo.embed's answer has no points matrix ({:?})", other.map(|v| v.type_name())),
    };
    let mut summary = serde_json::to_value(&fields)?;
    summary["nodes"] = json!(points.len() / args.dim.max(1));
    summary["cached"] = json!(out.cached);
    Ok(Ok(Embedded { summary, points }))
}

fn table(path: &Path, row: Option<usize>) -> anyhow::Result<ExitCode> {
    let t = hsync_embeddings::EmbeddingTable::open(path)?;
    let mut out = json!({"path": path.display().to_string(), "rows": t.rows(), "dim": t.dim(), "c": t.c()});
    if let Some(i) = row {
        let r = t.row(i).with_context(|| format!("row {i} does not exist: the table has {} rows", t.rows()))?;
        out["row"] = json!({"index": i, "coordinates": r});
    }
    print_json(&out)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_lists_parse_with_comments_and_commas() {
        let edges = parse_edges("# a tree\n0 1\n0,2\n\n 2\t3  # leaf\n").unwrap();
        assert_eq!(edges, [(0, 1), (0, 2), (2, 3)]);
    }

    #[test]
    fn bad_edge_lines_name_the_line() {
        let e = parse_edges("0 1\n1 x\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("`x`"), "{e}");
        let e = parse_edges("0 1 2\n").unwrap_err().to_string();
        assert!(e.contains("line 1: expected two node numbers"), "{e}");
        let e = parse_edges("-1 2\n").unwrap_err().to_string();
        assert!(e.contains("not a node number"), "{e}");
    }
}
