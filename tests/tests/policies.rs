//! The policy write path against a whole installation: a policy stored with
//! `PolicyAdmin::put` (or `hsync policy put`) decides the very next query once
//! `wait_applied` has returned — no polling.

use std::time::Duration;

use hsync_client::policies::PolicyAdmin;
use hsync_e2e::Cluster;
use hsync_protocol::policy::{PolicyQuery, Stage};
use hsync_protocol::ErrorCode;

const WAIT: Duration = Duration::from_secs(10);

const ALLOW_ALL: &str = "permit(principal, action, resource);";
const NO_GEOMETRY_FOR_MALLORY: &str =
    r#"forbid(principal == Hsync::User::"mallory", action, resource in Hsync::Capability::"geometry");"#;

/// What the request mapping needs, and a context of job and node ids only.
const SCHEMA: &str = r#"namespace Hsync {
  entity User;
  entity Capability;
  entity Operator in [Capability] { capabilities: Set<String> };
  type StepContext = { job_id: String, node_id: String };
  action pre, post appliesTo { principal: [User], resource: [Operator], context: StepContext };
}
"#;

fn query(principal: &str) -> PolicyQuery {
    serde_json::from_value(serde_json::json!({
        "principal": principal,
        "stage": "pre",
        "operator": "geo.poincare.distance",
        "capabilities": ["geometry"],
        "context": {"job_id": "j1", "node_id": "d"}
    }))
    .expect("a policy query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_policy_decides_the_next_query_once_applied() {
    let c = Cluster::start().await.expect("cluster starts");
    let admin = PolicyAdmin::new(c.bus.clone());

    // Nothing stored: everything is permitted.
    let d = admin.test(query("mallory")).await.expect("evaluated");
    assert!(d.allowed, "{d:?}");

    let r = admin.put("allow-all", ALLOW_ALL, None).await.expect("stored");
    assert!(admin.wait_applied(r, WAIT).await.expect("applied") >= 1);
    let r = admin.put("no-geometry-for-mallory", NO_GEOMETRY_FOR_MALLORY, None).await.expect("stored");
    assert!(admin.wait_applied(r, WAIT).await.expect("applied") >= 1);
    // Straight away, not eventually.
    let d = admin.test(query("mallory")).await.expect("evaluated");
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.policies, ["no-geometry-for-mallory"], "{d:?}");
    let d = admin.test(query("alice")).await.expect("evaluated");
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.policies, ["allow-all"], "{d:?}");
    // A post-stage query is not a geometry "pre" step, but the forbid covers every action.
    let mut post = query("mallory");
    post.stage = Stage::Post;
    assert!(!admin.test(post).await.unwrap().allowed);

    // A schema, then a policy it rejects: nothing changes in the evaluator either.
    let r = admin.put_schema(SCHEMA, None).await.expect("schema stored");
    assert!(admin.wait_applied(r, WAIT).await.expect("applied") >= 1);
    let e = admin
        .put("by-colour", r#"permit(principal, action, resource) when { context.colour == "red" };"#, None)
        .await
        .unwrap_err()
        .to_reply();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.contains("colour"), "{e}");
    assert_eq!(admin.get("by-colour").await.unwrap(), None);
    assert!(!admin.test(query("mallory")).await.unwrap().allowed);

    // Deleting the forbid lets mallory through at once.
    let r = admin.delete("no-geometry-for-mallory", None).await.expect("deleted");
    assert!(admin.wait_applied(r, WAIT).await.expect("applied") >= 1);
    let d = admin.test(query("mallory")).await.expect("evaluated");
    assert!(d.allowed, "{d:?}");
}

/// Runs `hsync` against the cluster, with `stdin` on its standard input.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hsync_policy_commands_manage_and_test_policies() {
    let c = Cluster::start().await.expect("cluster starts");
    let out = c.hsync(&["policy", "put", "allow-all", "-"], ALLOW_ALL);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = c.hsync(&["policy", "put", "no-geometry-for-mallory", "-"], NO_GEOMETRY_FOR_MALLORY);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("policy no-geometry-for-mallory stored at revision") && stdout.contains("applied by 1 evaluator replica(s)"),
        "{stdout}"
    );

    let mallory = serde_json::to_string(&query("mallory")).unwrap();
    let out = c.hsync(&["policy", "test", "-"], &mallory);
    assert_eq!(out.status.code(), Some(3), "deny is exit code 3: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("DENY\n") && stdout.contains("no-geometry-for-mallory"), "{stdout}");
    let out = c.hsync(&["policy", "test", "--json", "-"], &serde_json::to_string(&query("alice")).unwrap());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let decision: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON decision");
    assert_eq!(decision["allowed"], true);

    let out = c.hsync(&["policy", "list", "--json"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON list");
    let ids: Vec<&str> = listed["policies"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["allow-all", "no-geometry-for-mallory"]);
    assert!(listed["schema_revision"].is_null());
    let revision = listed["policies"][1]["revision"].as_u64().expect("a revision");

    let out = c.hsync(&["policy", "get", "no-geometry-for-mallory"], "");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim_end(), NO_GEOMETRY_FOR_MALLORY);

    // Compare-and-swap: a stale revision is refused and nothing changes.
    let stale = (revision - 1).to_string();
    let out = c.hsync(&["policy", "put", "no-geometry-for-mallory", "-", "--if-revision", &stale], ALLOW_ALL);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("at revision {revision}, not {stale}")), "{}", text(&out.stderr));
    let out = c.hsync(&["policy", "get", "no-geometry-for-mallory"], "");
    assert_eq!(text(&out.stdout).trim_end(), NO_GEOMETRY_FOR_MALLORY);

    // A policy that does not parse is refused with Cedar's diagnostic.
    let out = c.hsync(&["policy", "put", "broken", "-"], "permit(principal, action, resource");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not parse"), "{}", text(&out.stderr));

    // The schema round trip.
    let out = c.hsync(&["policy", "schema", "put", "-"], SCHEMA);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = c.hsync(&["policy", "schema", "get"], "");
    assert_eq!(text(&out.stdout), SCHEMA);

    let out = c.hsync(&["policy", "delete", "nobody"], "");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let out = c.hsync(&["policy", "delete", "no-geometry-for-mallory"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = c.hsync(&["policy", "test", "-"], &mallory);
    assert_eq!(out.status.code(), Some(0), "allowed once the forbid is gone: {}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_around_the_client_that_the_evaluator_rejects_is_reported_to_the_waiter() {
    let c = Cluster::start().await.expect("cluster starts");
    let admin = PolicyAdmin::new(c.bus.clone());
    let r = admin.put("allow-all", ALLOW_ALL, None).await.expect("stored");
    assert!(admin.wait_applied(r, WAIT).await.expect("applied") >= 1);

    // Straight into the bucket, skipping validation, as a program in another language might.
    let bucket = hsync_bus::streams::policies_bucket(&c.bus.jetstream(), c.bus.names()).await.expect("bucket");
    let bad = bucket.put("policy.broken", "permit(principal, action, resource".into()).await.expect("put");
    let e = admin.wait_applied(bad, WAIT).await.unwrap_err().to_reply();
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    assert!(e.message.contains("rejected revision") && e.message.contains("broken"), "{e}");
    // The running set was kept.
    assert!(admin.test(query("mallory")).await.expect("evaluated").allowed);
}
