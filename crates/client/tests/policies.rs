//! `PolicyAdmin` against a real nats-server: validation before writing, compare-and-swap,
//! and waiting for evaluator replicas (stood in for by small NATS micro services that
//! report an `applied_revision`; the real evaluator is covered by the end-to-end suite).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsync_bus::{Bus, BusConfig, BusError};
use hsync_client::policies::{valid_policy_id, PolicyAdmin, MAX_POLICY_ID, MAX_SCHEMA_BYTES};
use hsync_protocol::names::services;
use hsync_protocol::{ErrorCode, ErrorReply};
use hsync_testkit::NatsServer;

/// Declares what the request mapping needs, and one optional context attribute.
const SCHEMA: &str = r#"namespace Hsync {
  entity User;
  entity Capability;
  entity Operator in [Capability] { capabilities: Set<String> };
  type StepContext = { job_id: String, node_id: String, dimension?: Long };
  action pre, post appliesTo { principal: [User], resource: [Operator], context: StepContext };
}
"#;

const ALLOW_ALL: &str = "permit(principal, action, resource);";
const READS_NODE_ID: &str = r#"forbid(principal, action, resource) when { context.node_id == "secret" };"#;
const SMALL_DIMENSIONS: &str =
    r#"permit(principal, action == Hsync::Action::"pre", resource) when { context has dimension && context.dimension < 64 };"#;

async fn setup() -> (NatsServer, Arc<Bus>, PolicyAdmin) {
    let nats = NatsServer::start().expect("nats-server starts");
    let bus = Arc::new(Bus::connect(&BusConfig::for_url(&nats.url()), "policies-test").await.expect("connect"));
    hsync_bus::streams::policies_bucket(&bus.jetstream(), bus.names()).await.expect("bucket");
    let admin = PolicyAdmin::new(bus.clone());
    (nats, bus, admin)
}

fn remote(e: BusError) -> ErrorReply {
    match e {
        BusError::Remote(r) => r,
        other => panic!("expected an error reply, got {other}"),
    }
}

#[tokio::test]
async fn a_valid_policy_is_stored_listed_and_read_back() {
    let (_nats, _bus, admin) = setup().await;
    let r_b = admin.put("b-small", SMALL_DIMENSIONS, None).await.expect("stored");
    let r_a = admin.put("a_all", ALLOW_ALL, None).await.expect("stored");
    assert!(r_a > r_b && r_b > 0, "revisions grow: {r_b}, {r_a}");
    assert_eq!(admin.get("b-small").await.unwrap(), Some((SMALL_DIMENSIONS.to_string(), r_b)));
    assert_eq!(admin.get("missing").await.unwrap(), None);
    assert_eq!(admin.list().await.unwrap(), vec![("a_all".to_string(), r_a), ("b-small".to_string(), r_b)]);
    assert_eq!(admin.get_schema().await.unwrap(), None);

    // Replacing keeps the id and moves the revision on.
    let r_b2 = admin.put("b-small", ALLOW_ALL, None).await.expect("replaced");
    assert!(r_b2 > r_a);
    assert_eq!(admin.get("b-small").await.unwrap(), Some((ALLOW_ALL.to_string(), r_b2)));
}

#[tokio::test]
async fn a_policy_failing_strict_validation_is_rejected_and_nothing_is_written() {
    let (_nats, _bus, admin) = setup().await;
    let r_schema = admin.put_schema(SCHEMA, None).await.expect("schema stored");
    assert_eq!(admin.get_schema().await.unwrap(), Some((SCHEMA.to_string(), r_schema)));
    let r = admin.put("small", SMALL_DIMENSIONS, None).await.expect("a valid policy is stored");

    // `colour` is not in the schema's context: strict validation fails.
    let bad = r#"permit(principal, action, resource) when { context.colour == "red" };"#;
    let e = remote(admin.put("small", bad, None).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    assert!(e.message.contains("fails validation against the schema"), "{e}");
    assert!(e.message.contains("colour"), "Cedar's diagnostic names the attribute: {e}");
    assert_eq!(admin.get("small").await.unwrap(), Some((SMALL_DIMENSIONS.to_string(), r)), "unchanged");

    let e = remote(admin.put("fresh", bad, None).await.unwrap_err());
    assert!(e.message.contains("colour"), "{e}");
    assert_eq!(admin.get("fresh").await.unwrap(), None, "nothing written");

    // Text that is not Cedar at all, or two policies in one text.
    let e = remote(admin.put("fresh", "permit(principal, action, resource", None).await.unwrap_err());
    assert!(e.message.contains("does not parse"), "{e}");
    let e = remote(admin.put("fresh", &format!("{ALLOW_ALL}\n{ALLOW_ALL}"), None).await.unwrap_err());
    assert!(e.message.contains("exactly one static policy"), "{e}");
    assert_eq!(admin.list().await.unwrap(), vec![("small".to_string(), r)]);
}

#[tokio::test]
async fn a_schema_that_breaks_a_stored_policy_is_rejected_naming_it() {
    let (_nats, _bus, admin) = setup().await;
    admin.put("allow-all", ALLOW_ALL, None).await.unwrap();
    // Stored without a schema: only parsed.
    admin.put("reads-node-id", READS_NODE_ID, None).await.unwrap();

    let without_node_id = SCHEMA.replace("node_id: String, ", "");
    let e = remote(admin.put_schema(&without_node_id, None).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    assert!(e.message.contains("`reads-node-id`"), "names the policy: {e}");
    assert!(e.message.contains("node_id"), "Cedar's diagnostic names the attribute: {e}");
    assert_eq!(admin.get_schema().await.unwrap(), None, "nothing written");

    // A schema that lacks what the request mapping needs, or does not parse.
    let e = remote(admin.put_schema(&SCHEMA.replace("action pre, post", "action pre"), None).await.unwrap_err());
    assert!(e.message.contains("post"), "{e}");
    let e = remote(admin.put_schema("namespace Hsync {", None).await.unwrap_err());
    assert!(e.message.contains("invalid Cedar schema"), "{e}");
    assert_eq!(admin.get_schema().await.unwrap(), None);

    let r = admin.put_schema(SCHEMA, None).await.expect("a compatible schema is stored");
    assert_eq!(admin.get_schema().await.unwrap(), Some((SCHEMA.to_string(), r)));
}

#[tokio::test]
async fn bad_ids_are_rejected_saying_why() {
    let (_nats, _bus, admin) = setup().await;
    assert!(valid_policy_id("Az09-_").is_ok());
    assert!(valid_policy_id(&"x".repeat(MAX_POLICY_ID)).is_ok());
    for (id, why) in [
        ("", "empty"),
        ("team.rule", "dots are not allowed"),
        ("has space", "' ' at byte 3"),
        ("caf\u{e9}", "at byte 3"),
        ("a*", "'*'"),
        (&*"x".repeat(MAX_POLICY_ID + 1), "129 bytes"),
    ] {
        let e = remote(admin.put(id, ALLOW_ALL, None).await.unwrap_err());
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{id:?}: {e}");
        assert!(e.message.contains(why), "{id:?}: {e}");
        assert_eq!(remote(admin.get(id).await.unwrap_err()).code, ErrorCode::InvalidArgument);
        assert_eq!(remote(admin.delete(id, None).await.unwrap_err()).code, ErrorCode::InvalidArgument);
    }
    assert_eq!(admin.list().await.unwrap(), vec![], "nothing written");
}

#[tokio::test]
async fn oversized_texts_are_rejected() {
    let (_nats, _bus, admin) = setup().await;
    let padded = format!("{ALLOW_ALL}\n// {}", "x".repeat(hsync_policy::MAX_POLICY_BYTES));
    let e = remote(admin.put("big", &padded, None).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    assert!(e.message.contains(&format!("the limit is {}", hsync_policy::MAX_POLICY_BYTES)), "{e}");

    let schema = format!("{SCHEMA}\n// {}", "x".repeat(MAX_SCHEMA_BYTES));
    let e = remote(admin.put_schema(&schema, None).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    assert!(e.message.contains(&format!("the limit is {MAX_SCHEMA_BYTES}")), "{e}");

    assert_eq!(admin.list().await.unwrap(), vec![]);
    assert_eq!(admin.get_schema().await.unwrap(), None);
}

#[tokio::test]
async fn an_expected_revision_makes_writes_compare_and_swap() {
    let (_nats, _bus, admin) = setup().await;
    // 0: only if absent.
    let r1 = admin.put("p", ALLOW_ALL, Some(0)).await.expect("created");
    let e = remote(admin.put("p", SMALL_DIMENSIONS, Some(0)).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    assert!(e.message.contains(&format!("at revision {r1}, not 0")), "{e}");

    let r2 = admin.put("p", SMALL_DIMENSIONS, Some(r1)).await.expect("at the expected revision");
    // A second writer who read r1 too must not overwrite r2.
    let e = remote(admin.put("p", ALLOW_ALL, Some(r1)).await.unwrap_err());
    assert!(e.message.contains(&format!("at revision {r2}, not {r1}")), "{e}");
    assert_eq!(admin.get("p").await.unwrap(), Some((SMALL_DIMENSIONS.to_string(), r2)));

    // The schema and deletions, too.
    let e = remote(admin.put_schema(SCHEMA, Some(r2)).await.unwrap_err());
    assert!(e.message.contains("(it does not exist)"), "{e}");
    let rs = admin.put_schema(SCHEMA, Some(0)).await.expect("schema created");
    assert_eq!(admin.put_schema(SCHEMA, Some(rs)).await.expect("schema replaced"), rs + 1);
    let e = remote(admin.delete("p", Some(r1)).await.unwrap_err());
    assert!(e.message.contains(&format!("not {r1}")), "{e}");
    assert!(admin.get("p").await.unwrap().is_some(), "not deleted");
    admin.delete("p", Some(r2)).await.expect("deleted at the expected revision");
    assert_eq!(admin.get("p").await.unwrap(), None);
    // Deleted counts as absent for `Some(0)`.
    admin.put("p", ALLOW_ALL, Some(0)).await.expect("re-created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_to_one_id_all_succeed_one_after_another() {
    let (_nats, _bus, admin) = setup().await;
    admin.put_schema(SCHEMA, None).await.unwrap();
    // Each lost compare-and-swap means another writer won, so with as many writers as
    // attempts every one of them gets through.
    let writers: Vec<_> = (0..5)
        .map(|i| {
            let admin = admin.clone();
            tokio::spawn(async move {
                let text = format!("permit(principal == Hsync::User::\"u{i}\", action, resource);");
                (admin.put("shared", &text, None).await, text)
            })
        })
        .collect();
    let mut done = Vec::new();
    for w in writers {
        let (r, text) = w.await.unwrap();
        done.push((r.expect("every writer succeeds"), text));
    }
    done.sort();
    done.dedup_by_key(|(r, _)| *r);
    assert_eq!(done.len(), 5, "five distinct revisions: {done:?}");
    let (last_rev, last_text) = done.pop().unwrap();
    assert_eq!(admin.get("shared").await.unwrap(), Some((last_text, last_rev)), "the last write is what is stored");
}

#[tokio::test]
async fn deleting_an_absent_policy_is_not_found() {
    let (_nats, _bus, admin) = setup().await;
    assert_eq!(remote(admin.delete("ghost", None).await.unwrap_err()).code, ErrorCode::NotFound);
    let r = admin.put("ghost", ALLOW_ALL, None).await.unwrap();
    let d = admin.delete("ghost", None).await.expect("deleted");
    assert!(d > r, "the deletion has its own revision: {d} after {r}");
    assert_eq!(admin.get("ghost").await.unwrap(), None);
    assert_eq!(admin.list().await.unwrap(), vec![]);
    let e = remote(admin.delete("ghost", None).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::NotFound, "{e}");
    assert!(e.message.contains("ghost"), "{e}");
    // Writing over the delete marker works.
    let r2 = admin.put("ghost", ALLOW_ALL, None).await.expect("stored again");
    assert!(r2 > d);
}

/// A stand-in evaluator replica: a NATS micro service under the evaluator's name whose
/// endpoint stats report `applied`.
async fn fake_replica(bus: &Bus, applied: Arc<AtomicU64>) -> (async_nats::service::Service, async_nats::service::endpoint::Endpoint, String) {
    let service = hsync_bus::start_service(bus, services::POLICY_EVALUATOR, "stand-in", move |_| {
        serde_json::json!({ "applied_revision": applied.load(Ordering::SeqCst) })
    })
    .await
    .expect("service");
    let endpoint = service
        .endpoint_builder()
        .name("evaluate")
        .add("test.fake.evaluate")
        .await
        .expect("endpoint");
    let id = service.info().await.id;
    (service, endpoint, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_evaluators_counts_replicas_and_names_laggards() {
    let (_nats, bus, admin) = setup().await;
    // Nobody answers: the caller is told so at once rather than after the timeout.
    let started = Instant::now();
    assert_eq!(admin.wait_applied(1, Duration::from_secs(10)).await.unwrap(), 0);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    let ahead = Arc::new(AtomicU64::new(10));
    let behind = Arc::new(AtomicU64::new(3));
    let (_s1, _e1, ahead_id) = fake_replica(&bus, ahead.clone()).await;
    let (_s2, _e2, behind_id) = fake_replica(&bus, behind.clone()).await;

    assert_eq!(admin.wait_applied(3, Duration::from_secs(5)).await.unwrap(), 2);
    let e = remote(admin.wait_applied(5, Duration::from_millis(700)).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::Timeout, "{e}");
    assert!(e.message.contains(&behind_id) && e.message.contains("at revision 3"), "{e}");
    assert!(!e.message.contains(&ahead_id), "only the laggard is named: {e}");

    // It catches up while we wait.
    let catching_up = behind.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        catching_up.store(12, Ordering::SeqCst);
    });
    assert_eq!(admin.wait_applied(10, Duration::from_secs(10)).await.unwrap(), 2);
}
