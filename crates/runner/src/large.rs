//! Outputs too large for one NATS message: put into the JetStream object store (in chunks,
//! with a SHA-256 digest), and the reply carries an [`ObjectRef`] instead.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, object_store};
use hsync_protocol::job::{JobResult, ObjectRef};
use hsync_protocol::{ErrorCode, ErrorReply, Names, Value};
use tokio::sync::OnceCell;

/// Room left in a message for the rest of the reply and its headers.
const HEADROOM: usize = 64 * 1024;

/// Moves the outputs of a too-large result into the object store. The store is opened
/// (or created) on first use, so a runner that never produces large outputs never makes it.
pub struct OutputSpill {
    js: jetstream::Context,
    names: Names,
    store: OnceCell<object_store::ObjectStore>,
}

impl OutputSpill {
    pub fn new(js: jetstream::Context, names: Names) -> Self {
        OutputSpill {
            js,
            names,
            store: OnceCell::new(),
        }
    }

    /// Leaves `result` as it is when its outputs fit in a message of `max_payload` bytes;
    /// otherwise stores them as one object and replaces them by its reference.
    pub async fn fit(&self, result: &mut JobResult, max_payload: usize) -> Result<(), ErrorReply> {
        let budget = max_payload.saturating_sub(HEADROOM);
        // The estimate is cheap and errs high; only a result near the limit is encoded.
        let estimate: usize = result.outputs.iter().map(|(k, v)| k.len() + v.approx_size()).sum();
        if estimate <= budget / 2 {
            return Ok(());
        }
        let bytes = encode_outputs(&result.outputs)?;
        if bytes.len() <= budget {
            return Ok(());
        }
        let store = self.store().await?;
        // Unique per run: two runs of one job id never read each other's object.
        let name = format!("{}-{}", result.job_id, uuid::Uuid::now_v7().simple());
        let info = store
            .put(name.as_str(), &mut bytes.as_slice())
            .await
            .map_err(|e| unavailable(format!("cannot store {} bytes of outputs in {}: {e}", bytes.len(), self.names.bucket_outputs())))?;
        tracing::info!(job_id = %result.job_id, bytes = info.size, chunks = info.chunks, "outputs sent through the object store");
        result.outputs.clear();
        result.outputs_object = Some(ObjectRef {
            bucket: self.names.bucket_outputs(),
            name,
            size: info.size as u64,
        });
        Ok(())
    }

    async fn store(&self) -> Result<&object_store::ObjectStore, ErrorReply> {
        self.store
            .get_or_try_init(|| async {
                hsync_bus::streams::outputs_store(&self.js, &self.names)
                    .await
                    .map_err(|e| unavailable(e.to_string()))
            })
            .await
    }
}

/// The object's content: the outputs map in MessagePack, the format `JobClient` reads.
pub fn encode_outputs(outputs: &BTreeMap<String, Value>) -> Result<Vec<u8>, ErrorReply> {
    rmp_serde::to_vec_named(outputs)
        .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("cannot encode the outputs: {e}")))
}

fn unavailable(msg: String) -> ErrorReply {
    ErrorReply::new(ErrorCode::Unavailable, msg)
}
