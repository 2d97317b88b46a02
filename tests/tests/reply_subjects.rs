//! A service answers on whatever reply subject a request names, with its own permissions.
//! A request to the signer's key endpoint naming `hsync.receipts.batches` as its reply
//! would write the answer into the receipt log (the signer would then refuse the unreadable
//! "last batch" and stop); naming a KV key would overwrite it. Services only answer inboxes.

use std::time::Duration;

use futures::StreamExt;
use hsync_client::JobClient;
use hsync_e2e::Cluster;
use hsync_protocol::job::{Job, JobStatus};

fn example_job() -> Job {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/jobs/01-vector-math.json");
    let mut job: Job = serde_json::from_slice(&std::fs::read(path).expect("example job")).expect("example job parses");
    job.wait_receipts = true;
    job
}

async fn receipts_in_stream(c: &Cluster) -> u64 {
    let mut stream = c.bus.jetstream().get_stream(c.bus.names().stream_receipts()).await.expect("receipts stream");
    stream.info().await.expect("stream info").state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_subject_outside_the_inboxes_gets_no_answer_and_the_log_goes_on() {
    let c = Cluster::start().await.expect("cluster starts");
    let jobs = JobClient::new(c.bus.clone());
    let first = jobs.run(&example_job(), Duration::from_secs(30)).await.expect("job runs");
    assert_eq!(first.status, JobStatus::Succeeded, "{:?}", first.error);
    let before = receipts_in_stream(&c).await;
    assert!(before > 0);

    let nats = c.bus.primary();
    let keys = c.bus.names().receipts_keys();
    // A plain subject as the reply: nothing may arrive there.
    let mut target = nats.subscribe("not.an.inbox").await.unwrap();
    nats.publish_with_reply(keys.clone(), "not.an.inbox".to_string(), "".into()).await.unwrap();
    // The receipt log's own subject as the reply.
    nats.publish_with_reply(keys.clone(), c.bus.names().receipts_batches(), "".into()).await.unwrap();
    nats.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(2), target.next()).await.is_err(),
        "a service answered on a subject that is not an inbox"
    );
    // An inbox still gets its answer.
    let answer = nats.request(keys, "".into()).await.expect("the keys endpoint answers an inbox");
    assert!(!answer.payload.is_empty());

    // Nothing was written into the log, and it goes on.
    assert_eq!(receipts_in_stream(&c).await, before);
    let second = jobs.run(&example_job(), Duration::from_secs(30)).await.expect("job runs");
    assert_eq!(second.status, JobStatus::Succeeded, "{:?}", second.error);
    assert_eq!(second.receipts.len(), second.nodes.len(), "every step of the later job has its receipt");
    assert!(receipts_in_stream(&c).await > before);
    assert!(c.log("receipt-signer").contains("its reply subject is not an inbox"), "the refusal is logged");
}
