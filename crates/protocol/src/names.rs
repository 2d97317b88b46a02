//! Subject, stream, bucket and service names: the one place they are spelled.
//!
//! Every name derives from a prefix (default `hsync`) so that several HyperSync
//! installations can share one NATS cluster.

/// Default subject prefix.
pub const DEFAULT_PREFIX: &str = "hsync";

/// NATS micro service names (`$SRV.PING.<name>`).
pub mod services {
    pub const OPERATOR_RUNNER: &str = "hsync-operator-runner";
    pub const POLICY_EVALUATOR: &str = "hsync-policy-evaluator";
    pub const GEOMETRY_CACHE: &str = "hsync-geometry-cache";
    pub const RECEIPT_SIGNER: &str = "hsync-receipt-signer";
    pub const INDEXER: &str = "hsync-indexer";
    /// All five, in the order a job flows through them.
    pub const ALL: [&str; 5] = [
        OPERATOR_RUNNER,
        POLICY_EVALUATOR,
        GEOMETRY_CACHE,
        RECEIPT_SIGNER,
        INDEXER,
    ];
}

/// Key of the Cedar schema inside the policy bucket; policies live under `policy.<id>`.
pub const POLICY_SCHEMA_KEY: &str = "schema";
/// Key prefix of policies inside the policy bucket.
pub const POLICY_KEY_PREFIX: &str = "policy.";

/// Names derived from one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Default for Names {
    fn default() -> Self {
        Names::new(DEFAULT_PREFIX)
    }
}

impl Names {
    /// `prefix` must be a valid subject token sequence (letters, digits, `-`, `_`, `.`).
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.trim_end_matches('.').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn subject(&self, rest: &str) -> String {
        format!("{}.{}", self.prefix, rest)
    }

    /// Upper-case, `_`-separated form of the prefix for stream names (streams allow no dots).
    fn stream(&self, name: &str) -> String {
        format!("{}_{}", self.prefix.replace(['.', '-'], "_").to_uppercase(), name)
    }

    fn bucket(&self, name: &str) -> String {
        format!("{}_{}", self.prefix.replace(['.', '-'], "_"), name)
    }

    // --- jobs ---
    /// Request/reply: run a job and get its JobResult.
    pub fn jobs_run(&self) -> String {
        self.subject("jobs.run")
    }
    /// Request/reply: add nodes to a job session (a job run with `keep_session`).
    pub fn jobs_extend(&self) -> String {
        self.subject("jobs.extend")
    }
    /// JetStream work queue: durable job submission.
    pub fn jobs_submit(&self) -> String {
        self.subject("jobs.submit")
    }
    /// Where the result of a durable job is published.
    pub fn jobs_result(&self, job_id: &str) -> String {
        self.subject(&format!("jobs.result.{job_id}"))
    }
    pub fn jobs_result_wildcard(&self) -> String {
        self.subject("jobs.result.*")
    }

    // --- policy ---
    pub fn policy_evaluate(&self) -> String {
        self.subject("policy.evaluate")
    }

    // --- operators ---
    /// Subject an operator provider serves, e.g. `hsync.op.geo.poincare.distance`.
    pub fn operator(&self, operator_id: &str) -> String {
        self.subject(&format!("op.{operator_id}"))
    }
    /// Subject where a provider answers batches of calls (`OperatorBatch`) to one operator,
    /// e.g. `hsync.opbatch.geo.poincare.distance`. Not under `op.`, so that no operator id
    /// can collide with it.
    pub fn operator_batch(&self, operator_id: &str) -> String {
        self.subject(&format!("opbatch.{operator_id}"))
    }

    // --- records and receipts ---
    pub fn ops_records(&self) -> String {
        self.subject("ops.records")
    }
    pub fn receipts_batches(&self) -> String {
        self.subject("receipts.batches")
    }
    /// Request/reply: the verifier key(s) of the receipt log.
    pub fn receipts_keys(&self) -> String {
        self.subject("receipts.keys")
    }

    // --- index (audit queries) ---
    pub fn index_receipt_by_operation(&self) -> String {
        self.subject("index.receipt.by_operation")
    }
    pub fn index_receipt_by_id(&self) -> String {
        self.subject("index.receipt.by_id")
    }
    pub fn index_receipts_by_time(&self) -> String {
        self.subject("index.receipts.by_time")
    }
    pub fn index_checkpoint(&self) -> String {
        self.subject("index.checkpoint")
    }
    pub fn index_receipts_by_job(&self) -> String {
        self.subject("index.receipts.by_job")
    }
    pub fn index_consistency(&self) -> String {
        self.subject("index.consistency")
    }
    pub fn index_operator_by_id(&self) -> String {
        self.subject("index.operator.by_id")
    }
    pub fn index_operators(&self) -> String {
        self.subject("index.operators")
    }
    pub fn index_stats(&self) -> String {
        self.subject("index.stats")
    }

    // --- streams ---
    pub fn stream_jobs(&self) -> String {
        self.stream("JOBS")
    }
    pub fn stream_records(&self) -> String {
        self.stream("RECORDS")
    }
    pub fn stream_receipts(&self) -> String {
        self.stream("RECEIPTS")
    }

    // --- durable consumer names ---
    pub fn consumer_signer(&self) -> String {
        "receipt-signer".to_string()
    }
    pub fn consumer_indexer(&self) -> String {
        "indexer".to_string()
    }
    pub fn consumer_runner(&self) -> String {
        "operator-runner".to_string()
    }

    // --- KV buckets ---
    pub fn bucket_operators(&self) -> String {
        self.bucket("operators")
    }
    pub fn bucket_policies(&self) -> String {
        self.bucket("policies")
    }
    pub fn bucket_results(&self) -> String {
        self.bucket("results")
    }
    /// Object store for job outputs larger than one NATS message.
    pub fn bucket_outputs(&self) -> String {
        self.bucket("outputs")
    }
    /// The receipt-signer's leadership lease: one writer of the log at a time.
    pub fn bucket_signer_lease(&self) -> String {
        self.bucket("signer_lease")
    }

    /// Every request/reply and stream subject with its kind, for documentation and tests
    /// that check the AsyncAPI document covers them all.
    pub fn all_subjects(&self) -> Vec<(String, &'static str)> {
        vec![
            (self.jobs_run(), "request"),
            (self.jobs_extend(), "request"),
            (self.jobs_submit(), "stream"),
            (self.jobs_result("{job_id}"), "publish"),
            (self.policy_evaluate(), "request"),
            (self.operator("{operator}"), "request"),
            (self.operator_batch("{operator}"), "request"),
            (self.ops_records(), "stream"),
            (self.receipts_batches(), "stream"),
            (self.receipts_keys(), "request"),
            (self.index_receipt_by_operation(), "request"),
            (self.index_receipt_by_id(), "request"),
            (self.index_receipts_by_job(), "request"),
            (self.index_receipts_by_time(), "request"),
            (self.index_checkpoint(), "request"),
            (self.index_consistency(), "request"),
            (self.index_operator_by_id(), "request"),
            (self.index_operators(), "request"),
            (self.index_stats(), "request"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_match_the_design() {
        let n = Names::default();
        assert_eq!(n.jobs_run(), "hsync.jobs.run");
        assert_eq!(n.operator("geo.geodesic"), "hsync.op.geo.geodesic");
        assert_eq!(n.operator_batch("geo.geodesic"), "hsync.opbatch.geo.geodesic");
        assert_eq!(n.stream_records(), "HSYNC_RECORDS");
        assert_eq!(n.bucket_policies(), "hsync_policies");
    }

    #[test]
    fn prefix_is_configurable() {
        let n = Names::new("acme.prod.");
        assert_eq!(n.policy_evaluate(), "acme.prod.policy.evaluate");
        assert_eq!(n.stream_jobs(), "ACME_PROD_JOBS");
        assert_eq!(n.bucket_results(), "acme_prod_results");
    }
}
