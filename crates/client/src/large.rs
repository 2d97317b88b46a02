//! Reading job outputs that came through the JetStream object store.

use std::collections::BTreeMap;
use std::io::Read;

use hsync_bus::{Bus, BusError};
use hsync_protocol::job::ObjectRef;
use hsync_protocol::{ErrorCode, ErrorReply, Value};
use tokio_util::io::SyncIoBridge;

/// Largest outputs object a client accepts.
pub const MAX_OUTPUTS_OBJECT: u64 = 1 << 30;

/// Decodes the outputs map straight from the object's chunks as they arrive: the encoded
/// bytes are never gathered into one buffer, so the client holds one copy (the decoded
/// values), not two. The object store checks the SHA-256 digest at the end of the read.
pub async fn fetch_outputs(bus: &Bus, object: &ObjectRef) -> Result<BTreeMap<String, Value>, BusError> {
    if object.bucket != bus.names().bucket_outputs() {
        return Err(remote(
            ErrorCode::InvalidArgument,
            format!("outputs are in bucket {:?}, expected {:?}", object.bucket, bus.names().bucket_outputs()),
        ));
    }
    if object.size > MAX_OUTPUTS_OBJECT {
        return Err(remote(
            ErrorCode::PayloadTooLarge,
            format!("the outputs object is {} bytes, more than this client's limit of {MAX_OUTPUTS_OBJECT}", object.size),
        ));
    }
    let store = bus
        .jetstream()
        .get_object_store(&object.bucket)
        .await
        .map_err(|e| BusError::Nats(format!("cannot open object store {}: {e}", object.bucket)))?;
    let reader = store
        .get(&object.name)
        .await
        .map_err(|e| BusError::Nats(format!("cannot read outputs object {} from {}: {e}", object.name, object.bucket)))?;
    if reader.info.size as u64 != object.size {
        return Err(remote(
            ErrorCode::Malformed,
            format!("outputs object {} holds {} bytes, its reference says {}", object.name, reader.info.size, object.size),
        ));
    }
    let (name, size) = (object.name.clone(), object.size);
    let reader = SyncIoBridge::new(reader);
    // Blocking reads, off the async runtime's threads; the buffer turns the decoder's many
    // small reads into few large ones.
    tokio::task::spawn_blocking(move || {
        let mut input = std::io::BufReader::with_capacity(64 * 1024, reader.take(size));
        let outputs: BTreeMap<String, Value> = rmp_serde::from_read(&mut input)
            .map_err(|e| remote(ErrorCode::Malformed, format!("outputs object {name}: {e}")))?;
        // Reading every byte is what makes the store check the digest of the last chunk.
        let mut rest = Vec::new();
        input
            .read_to_end(&mut rest)
            .map_err(|e| BusError::Nats(format!("reading outputs object {name}: {e}")))?;
        if !rest.is_empty() {
            return Err(remote(ErrorCode::Malformed, format!("outputs object {name} has {} bytes after its outputs", rest.len())));
        }
        Ok(outputs)
    })
    .await
    .map_err(|e| remote(ErrorCode::Internal, format!("outputs reader task: {e}")))?
}

fn remote(code: ErrorCode, msg: String) -> BusError {
    BusError::Remote(ErrorReply::new(code, msg))
}
