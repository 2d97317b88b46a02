//! The NATS accounts and subject permissions of `deploy/nats/accounts.conf`, with real
//! processes: nats-server runs that file, each service connects as its own user, and the
//! tests act as `client` (account CLIENTS, which reaches HSYNC only through its exports)
//! and as `admin`.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use hsync_client::policies::PolicyAdmin;
use hsync_client::{IndexClient, JobClient};
use hsync_protocol::job::{Job, JobStatus};
use hsync_protocol::Names;
use hsync_testkit::secured::{SecuredCluster, UserConnection};

const WAIT: Duration = Duration::from_secs(30);
/// How long a refused publish has to show up as an error on the publisher's connection.
const REFUSAL: Duration = Duration::from_secs(5);

fn names() -> Names {
    Names::new(hsync_protocol::names::DEFAULT_PREFIX)
}

/// Touches every service: runner, policy-evaluator, the geometry-cache's geo.* operators,
/// and with receipts the signer and the indexer.
fn demo_job() -> Job {
    serde_json::from_value(serde_json::json!({
        "submitter": "alice",
        "wait_receipts": true,
        "nodes": [
            {"id": "a", "op": "const", "args": {"value": {"lit": [0.1, 0.2]}}},
            {"id": "b", "op": "vec.scale", "args": {"v": {"ref": "a"}, "k": 2.0}},
            {"id": "dist", "op": "geo.poincare.distance", "args": {"x": [0.0, 0.0], "y": {"ref": "b"}}}
        ]
    }))
    .expect("test job parses")
}

async fn start() -> SecuredCluster {
    SecuredCluster::start()
        .await
        .expect("nats-server with accounts.conf and the five services start")
}

/// Subscribes `subject` as `admin` and returns once the server has registered the
/// subscription: async-nats's `flush` only writes the socket, so a publish on another
/// connection right after it could overtake the SUB. A message to the connection's own
/// inbox is processed after the SUB and comes back only then.
async fn watch(admin: &UserConnection, subject: &str) -> async_nats::Subscriber {
    let c = &admin.client;
    let sub = c
        .subscribe(subject.to_string())
        .await
        .expect("admin subscribes");
    let inbox = c.new_inbox();
    let mut echo = c.subscribe(inbox.clone()).await.expect("admin subscribes");
    c.publish(inbox, "echo".into())
        .await
        .expect("admin publishes");
    tokio::time::timeout(REFUSAL, echo.next())
        .await
        .expect("the server answers the round trip")
        .expect("subscription open");
    sub
}

/// Publishes `payload` on `subject` as `who` and asserts the server refused it: the
/// publisher gets "Permissions Violation for Publish to <subject>", and `watch` (a
/// subscription to `subject` as admin, in HSYNC) receives nothing carrying `payload`.
async fn assert_publish_refused(
    who: &UserConnection,
    subject: &str,
    payload: &'static str,
    watch: &mut async_nats::Subscriber,
) {
    who.client
        .publish(subject.to_string(), payload.into())
        .await
        .expect("publish is sent");
    who.client.flush().await.expect("flush");
    let needle = format!("Permissions Violation for Publish to \"{subject}\"");
    assert!(
        who.wait_error(&needle, REFUSAL).await.is_some(),
        "no refusal of the publish to {subject}; errors received: {:?}",
        who.errors()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, watch.next()).await {
        assert_ne!(
            &m.payload[..],
            payload.as_bytes(),
            "the refused publish to {subject} was delivered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_runs_and_submits_jobs_and_queries_the_index_and_no_service_is_refused() {
    let c = start().await;
    let bus = c.bus("client").await.expect("client connects");
    let admin = PolicyAdmin::new(c.admin.clone());

    // admin stores a policy: the policy-evaluator's watch of the bucket picks it up.
    let rev = admin
        .put("allow-all", "permit(principal, action, resource);", None)
        .await
        .expect("admin stores a policy");
    assert!(
        admin
            .wait_applied(rev, WAIT)
            .await
            .expect("the evaluator applies it")
            >= 1
    );

    // Request/reply, with receipts: every service takes part.
    let jobs = JobClient::new(bus.clone());
    let result = jobs
        .run(&demo_job(), WAIT)
        .await
        .expect("client: hsync.jobs.run answers");
    assert_eq!(result.status, JobStatus::Succeeded, "{:?}", result.error);
    assert_eq!(result.nodes.len(), 3);
    assert_eq!(
        result.receipts.len(),
        3,
        "every step has its receipt: {result:#?}"
    );
    assert!(result.outputs["dist"].as_f64().expect("a distance") > 0.0);

    // The index, through the hsync.index.> export, and the keys through hsync.receipts.keys.
    let index = IndexClient::new(bus.clone());
    let receipt = &result.receipts[0];
    let found = index
        .receipt_by_operation(&receipt.operation_id)
        .await
        .expect("client: hsync.index.receipt.by_operation answers")
        .expect("the receipt is indexed");
    assert_eq!(&found, receipt);
    assert!(!index
        .verifier_keys()
        .await
        .expect("client: hsync.receipts.keys answers")
        .keys
        .is_empty());

    // The durable path: the publish into HSYNC_JOBS is acked through the hsync.jobs.submit
    // export, the result arrives on hsync.jobs.result.<id> and is read from hsync_results.
    let mut durable = demo_job();
    durable.job_id = "permissions-durable-1".into();
    durable.wait_receipts = false;
    let id = jobs
        .submit(&durable)
        .await
        .expect("client: durable submission is acked");
    let done = jobs
        .wait_result(&id, WAIT)
        .await
        .expect("waiting")
        .expect("the durable job finishes");
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    let stored = jobs
        .result(&id)
        .await
        .expect("client reads the results bucket")
        .expect("the result is stored");
    assert_eq!(stored.job_id, id);

    // Nothing any service (or client, or admin) did above was refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = c.violations();
    assert!(
        refused.is_empty(),
        "nats-server refused something:\n{}",
        refused.join("\n")
    );
    for name in hsync_testkit::cluster::SERVICE_BINARIES {
        let log = c.log(name);
        assert!(!log.is_empty(), "{name} logged nothing");
        let refused: Vec<&str> = log
            .lines()
            .filter(|l| l.to_lowercase().contains("permissions violation"))
            .collect();
        assert!(
            refused.is_empty(),
            "{name} was refused something:\n{}",
            refused.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cannot_forge_records_batches_policies_or_the_lease_nor_create_consumers() {
    let c = start().await;
    let n = names();
    let client = c.connect("client").await.expect("client connects");
    let admin = c.connect("admin").await.expect("admin connects");

    let forged = [
        n.ops_records(),
        n.receipts_batches(),
        format!("$KV.{}.policy.forged", n.bucket_policies()),
        format!("$KV.{}.leader", n.bucket_signer_lease()),
    ];
    for subject in &forged {
        let mut watch = watch(&admin, subject).await;
        assert_publish_refused(&client, subject, "forged-by-client", &mut watch).await;
    }

    // Neither bucket changed.
    let js = c.admin.jetstream();
    let policies = js
        .get_key_value(n.bucket_policies())
        .await
        .expect("policies bucket");
    assert_eq!(
        policies.get("policy.forged").await.expect("read"),
        None,
        "a client wrote a policy"
    );
    let lease = js
        .get_key_value(n.bucket_signer_lease())
        .await
        .expect("lease bucket");
    let holder = lease
        .get("leader")
        .await
        .expect("read")
        .expect("the signer holds the lease");
    assert_ne!(
        &holder[..],
        b"forged-by-client",
        "a client took the signer lease"
    );

    // No JetStream consumers: one on the records stream could deliver to any subject.
    let client_js = async_nats::jetstream::new(client.client.clone());
    let config = async_nats::jetstream::consumer::push::Config {
        durable_name: Some("thief".into()),
        deliver_subject: "hsync.jobs.result.thief".into(),
        ..Default::default()
    };
    let created = tokio::time::timeout(
        Duration::from_secs(3),
        client_js.create_consumer_on_stream(config, n.stream_records()),
    )
    .await;
    assert!(
        !matches!(created, Ok(Ok(_))),
        "client created a JetStream consumer"
    );
    assert!(
        client
            .wait_error(
                "Permissions Violation for Publish to \"$JS.API.CONSUMER.",
                REFUSAL
            )
            .await
            .is_some(),
        "no refusal of the consumer creation; errors received: {:?}",
        client.errors()
    );
    let consumers: Vec<String> = js
        .get_stream(n.stream_records())
        .await
        .expect("records stream")
        .consumer_names()
        .try_collect()
        .await
        .expect("consumer names");
    assert_eq!(
        consumers,
        [n.consumer_signer()],
        "only the signer consumes the records"
    );

    // Nor read what the services exchange.
    let _sub = client
        .client
        .subscribe(n.ops_records())
        .await
        .expect("subscribe is sent");
    client.client.flush().await.unwrap();
    let needle = format!(
        "Permissions Violation for Subscription to \"{}\"",
        n.ops_records()
    );
    assert!(
        client.wait_error(&needle, REFUSAL).await.is_some(),
        "errors received: {:?}",
        client.errors()
    );

    // The server logged each refusal against `client` (and nobody else was refused).
    let refused = c.violations();
    for subject in &forged {
        assert!(
            refused
                .iter()
                .any(|l| l.contains("User \"client\"") && l.contains(subject.as_str())),
            "the server log has no refusal of {subject}:\n{}",
            refused.join("\n")
        );
    }
    let others: Vec<_> = refused
        .iter()
        .filter(|l| !l.contains("User \"client\""))
        .collect();
    assert!(others.is_empty(), "refusals of other users: {others:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cannot_publish_records_batches_the_lease_or_results() {
    let c = start().await;
    let n = names();
    let admin = c.connect("admin").await.expect("admin connects");
    let watcher = c.connect("admin").await.expect("admin connects again");

    // The watcher sees what admin may publish, so seeing nothing below means something.
    let mut probes = watch(&watcher, "hsync.permissions.probe").await;
    admin
        .client
        .publish("hsync.permissions.probe", "probe".into())
        .await
        .unwrap();
    let probe = tokio::time::timeout(REFUSAL, probes.next())
        .await
        .expect("the probe arrives")
        .unwrap();
    assert_eq!(&probe.payload[..], b"probe");

    for subject in [
        n.ops_records(),
        n.receipts_batches(),
        format!("$KV.{}.leader", n.bucket_signer_lease()),
        format!("$KV.{}.forged", n.bucket_results()),
    ] {
        let mut watch = watch(&watcher, &subject).await;
        assert_publish_refused(&admin, &subject, "forged-by-admin", &mut watch).await;
    }
    // No job ran: nothing was ever stored in the records or the receipts stream.
    for stream in [n.stream_records(), n.stream_receipts()] {
        let s = c
            .admin
            .jetstream()
            .get_stream(&stream)
            .await
            .expect("stream exists");
        assert_eq!(
            s.cached_info().state.last_sequence,
            0,
            "something was stored in {stream}"
        );
    }
}
