//! The operator registry as its users see it: list, show and register definitions in the
//! registry bucket. The runner loads what it needs from the same bucket lazily.

use std::sync::Arc;

use async_nats::jetstream::kv;
use futures::StreamExt;
use hsync_bus::{Bus, BusError};
use hsync_protocol::operator::{OperatorDef, Provider};

/// Longest operator id; ids are KV keys and subject tokens.
pub const MAX_OPERATOR_ID: usize = 128;

/// A valid operator id: dot-separated tokens of letters, digits, '-' and '_'.
pub fn valid_operator_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_OPERATOR_ID
        && id.split('.').all(|t| {
            !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A subject a provider can be reached on: no wildcards, no empty tokens, no spaces.
fn concrete_subject(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.split('.').all(|t| !t.is_empty() && t != "*" && t != ">" && !t.contains(char::is_whitespace))
}

use crate::invalid_argument as invalid;

/// Encodes a definition for the bucket: plain MessagePack with named fields (a KV value
/// carries no headers, so never compressed).
pub fn encode_def(def: &OperatorDef) -> Result<Vec<u8>, BusError> {
    rmp_serde::to_vec_named(def).map_err(|e| invalid(format!("cannot encode operator {}: {e}", def.id)))
}

#[derive(Clone)]
pub struct OperatorRegistry {
    bus: Arc<Bus>,
}

impl OperatorRegistry {
    pub fn new(bus: Arc<Bus>) -> Self {
        OperatorRegistry { bus }
    }

    async fn bucket(&self) -> Result<kv::Store, BusError> {
        let name = self.bus.names().bucket_operators();
        self.bus.jetstream().get_key_value(&name).await.map_err(|e| {
            BusError::Nats(format!(
                "cannot open the operator registry (bucket {name}): {e}; is an operator-runner running?"
            ))
        })
    }

    /// Every registered definition, sorted by id (built-ins are registered by the runner).
    pub async fn list(&self) -> Result<Vec<OperatorDef>, BusError> {
        let kv = self.bucket().await?;
        let mut keys = kv.keys().await.map_err(|e| BusError::Nats(format!("cannot list operators: {e}")))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| BusError::Nats(format!("cannot list operators: {e}")))?;
            if let Some(def) = self.get_from(&kv, &key).await? {
                out.push(def);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub async fn get(&self, id: &str) -> Result<Option<OperatorDef>, BusError> {
        if !valid_operator_id(id) {
            return Err(invalid(format!("{id:?} is not a valid operator id")));
        }
        let kv = self.bucket().await?;
        self.get_from(&kv, id).await
    }

    async fn get_from(&self, kv: &kv::Store, id: &str) -> Result<Option<OperatorDef>, BusError> {
        match kv.get(id).await {
            Ok(Some(bytes)) => Ok(Some(self.bus.codec().decode(None, &bytes)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(BusError::Nats(format!("cannot read operator {id}: {e}"))),
        }
    }

    /// Registers (or replaces) a definition served by an external provider. Built-ins
    /// belong to the runner and cannot be registered or replaced from outside.
    pub async fn register(&self, def: &OperatorDef) -> Result<(), BusError> {
        if !valid_operator_id(&def.id) {
            return Err(invalid(format!(
                "{:?} is not a valid operator id: dot-separated tokens of letters, digits, '-' or '_', at most {MAX_OPERATOR_ID} bytes",
                def.id
            )));
        }
        if def.version.is_empty() || def.version.contains('@') || def.version.len() > 64 {
            return Err(invalid(format!("operator {}: version {:?} must be 1-64 characters without '@'", def.id, def.version)));
        }
        match &def.provider {
            Provider::Builtin => {
                return Err(invalid(format!(
                    "operator {}: only the runner registers built-ins; an external operator has provider {{\"kind\": \"nats\", \"subject\": ...}}",
                    def.id
                )))
            }
            Provider::Nats { subject, batch_subject } => {
                for s in std::iter::once(subject).chain(batch_subject) {
                    if !concrete_subject(s) {
                        return Err(invalid(format!("operator {}: {s:?} is not a concrete NATS subject", def.id)));
                    }
                }
            }
        }
        let kv = self.bucket().await?;
        if let Ok(Some(existing)) = self.get_from(&kv, &def.id).await {
            if matches!(existing.provider, Provider::Builtin) {
                return Err(invalid(format!("operator {} is a built-in and cannot be replaced", def.id)));
            }
        }
        kv.put(&def.id, encode_def(def)?.into())
            .await
            .map_err(|e| BusError::Nats(format!("cannot register operator {}: {e}", def.id)))?;
        Ok(())
    }

    /// Removes an externally provided operator.
    pub async fn remove(&self, id: &str) -> Result<bool, BusError> {
        let Some(existing) = self.get(id).await? else { return Ok(false) };
        if matches!(existing.provider, Provider::Builtin) {
            return Err(invalid(format!("operator {id} is a built-in and cannot be removed")));
        }
        let kv = self.bucket().await?;
        kv.delete(id)
            .await
            .map_err(|e| BusError::Nats(format!("cannot remove operator {id}: {e}")))?;
        Ok(true)
    }
}
