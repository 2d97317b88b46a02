//! The geometry operators through the whole installation: the example embedding job runs
//! (embedding → nearest neighbours and mean of its points → an exp step), and
//! `hsync geo embed` saves the service's embedding as a table identical to a local one,
//! which the service then searches in place (`geo.table.knn`).

use std::process::Output;
use std::time::Duration;

use hsync_client::JobClient;
use hsync_e2e::Cluster;
use hsync_protocol::job::{Job, JobStatus};
use hsync_protocol::Value;

fn example_job() -> Job {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/jobs/03-embedding.json");
    serde_json::from_slice(&std::fs::read(path).expect("example job")).expect("example job parses")
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    let Value::Map(m) = v else { panic!("not a map: {}", v.type_name()) };
    m.get(key).unwrap_or_else(|| panic!("no `{key}`"))
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "hsync failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_embedding_job_runs() {
    let c = Cluster::start().await.expect("cluster starts");
    let result = JobClient::new(c.bus.clone()).run(&example_job(), Duration::from_secs(30)).await.expect("job runs");
    assert_eq!(result.status, JobStatus::Succeeded, "{:?}", result.error);
    let tree = &result.outputs["tree"];
    let Value::Tensor(points) = field(tree, "points") else { panic!("points") };
    assert_eq!(points.shape(), &[8, 2]);
    // The root sits at the origin and its three children at distance τ = 1.5: the query at
    // the origin finds the root first, then the three children.
    let Value::Array(nearest) = field(&result.outputs["nearest"], "indices") else { panic!("indices") };
    assert_eq!(nearest[0], Value::Int(0));
    let mut children: Vec<&Value> = nearest[1..].iter().collect();
    children.sort_by_key(|v| v.as_i64());
    assert_eq!(children, [&Value::Int(1), &Value::Int(2), &Value::Int(3)]);
    let step = result.outputs["step"].as_vector().expect("a point");
    assert!(step.iter().map(|x| x * x).sum::<f64>() < 1.0, "{step:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsync_geo_embed_saves_the_services_embedding_and_the_service_searches_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tables = dir.path().to_str().unwrap().to_string();
    let c = Cluster::start_with(&[("HSYNC_GEO_TABLES_DIR", &tables)]).await.expect("cluster starts");
    let edges = dir.path().join("tree.txt");
    // A binary tree of 63 nodes plus one cycle edge, which the spanning tree leaves out.
    let mut text = String::from("# parent child\n");
    for i in 1..63 {
        text.push_str(&format!("{} {}\n", (i - 1) / 2, i));
    }
    text.push_str("3,4\n");
    std::fs::write(&edges, text).expect("edge list");
    let (remote, local) = (dir.path().join("tree.emb"), dir.path().join("local.emb"));
    let edges = edges.to_str().unwrap();

    let summary = json_of(&c.hsync(&["geo", "embed", edges, "--dim", "3", "--out", remote.to_str().unwrap()], ""));
    assert_eq!(summary["max_depth"], 5, "{summary}");
    assert_eq!(summary["non_tree_edges"], 1, "{summary}");
    assert_eq!(summary["table"]["rows"], 63, "{summary}");
    assert_eq!(summary["quality"]["mean_average_precision"], 1.0, "{summary}");
    let local_summary = json_of(&c.hsync(&["geo", "embed", edges, "--dim", "3", "--local", "--out", local.to_str().unwrap()], ""));
    assert_eq!(local_summary["tau"], summary["tau"]);
    // The service and the library give the very same points.
    assert_eq!(std::fs::read(&remote).unwrap(), std::fs::read(&local).unwrap());

    let table = json_of(&c.hsync(&["geo", "table", remote.to_str().unwrap(), "--row", "1"], ""));
    assert_eq!(table["rows"], 63);
    assert_eq!(table["dim"], 3);
    let row: Vec<f64> = serde_json::from_value(table["row"]["coordinates"].clone()).unwrap();
    // Depth 1 is τ from the origin: norm tanh(τ/2) at c = 1.
    let tau = summary["tau"].as_f64().unwrap();
    let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - (tau / 2.0).tanh()).abs() < 1e-12, "{norm} vs tau {tau}");

    // The saved table is searched in place by the service (memory-mapped): the nodes
    // nearest the origin are the root and its two children.
    let job: Job = serde_json::from_value(serde_json::json!({
        "submitter": "alice",
        "nodes": [{"id": "near", "op": "geo.table.knn", "args": {"table": "tree", "query": [0.0, 0.0, 0.0], "neighbours": 3}}]
    }))
    .unwrap();
    let result = JobClient::new(c.bus.clone()).run(&job, Duration::from_secs(30)).await.expect("job runs");
    assert_eq!(result.status, JobStatus::Succeeded, "{:?}", result.error);
    let Value::Array(near) = field(&result.outputs["near"], "indices") else { panic!("indices") };
    let mut near: Vec<i64> = near.iter().map(|v| v.as_i64().unwrap()).collect();
    near.sort();
    assert_eq!(near, [0, 1, 2]);

    // A bad edge list is refused before anything is sent, naming the line.
    std::fs::write(dir.path().join("bad.txt"), "0 1\n1 two\n").unwrap();
    let out = c.hsync(&["geo", "embed", dir.path().join("bad.txt").to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("`two`"), "{err}");
}
