//! The operator registry as the runner sees it: built-ins compiled in, everything else
//! loaded lazily from the registry bucket on first use and kept in sync by a KV watch.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::kv;
use futures::StreamExt;
use hsync_protocol::operator::{split_operator_ref, OperatorDef, Provider};
use hsync_protocol::{Codec, ErrorCode, ErrorReply};

#[derive(Clone)]
pub struct Registry {
    kv: Option<kv::Store>,
    loaded: Arc<RwLock<HashMap<String, Arc<OperatorDef>>>>,
    codec: Codec,
}

impl Registry {
    pub fn new(kv: Option<kv::Store>, codec: Codec) -> Self {
        Registry {
            kv,
            loaded: Arc::new(RwLock::new(HashMap::new())),
            codec,
        }
    }

    /// Publishes the built-in definitions so `hsync operators list` and policies see them.
    pub async fn register_builtins(&self) -> anyhow::Result<()> {
        for b in hsync_operators::catalogue() {
            self.register(&b.def).await?;
        }
        Ok(())
    }

    pub async fn register(&self, def: &OperatorDef) -> anyhow::Result<()> {
        if let Some(kv) = &self.kv {
            // Plain MessagePack: a KV value has no headers to mark compression.
            let body = rmp_serde::to_vec_named(def)?;
            kv.put(&def.id, body.into())
                .await
                .map_err(|e| anyhow::anyhow!("cannot register operator {}: {e}", def.id))?;
        }
        Ok(())
    }

    /// Keeps loaded definitions in step with the bucket: an update replaces, a delete evicts.
    pub fn follow_changes(&self) {
        let Some(kv) = self.kv.clone() else { return };
        let loaded = self.loaded.clone();
        let codec = self.codec.clone();
        tokio::spawn(async move {
            let mut watch = match kv.watch_all().await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!("cannot watch the operator registry: {e}");
                    return;
                }
            };
            while let Some(Ok(entry)) = watch.next().await {
                let mut map = loaded.write().unwrap_or_else(|p| p.into_inner());
                match entry.operation {
                    kv::Operation::Put => {
                        // Only refresh what was already loaded: loading stays lazy.
                        if map.contains_key(&entry.key) {
                            match codec.decode::<OperatorDef>(None, &entry.value) {
                                Ok(def) => {
                                    map.insert(entry.key.clone(), Arc::new(def));
                                }
                                Err(e) => tracing::warn!("bad operator definition {}: {e}", entry.key),
                            }
                        }
                    }
                    kv::Operation::Delete | kv::Operation::Purge => {
                        map.remove(&entry.key);
                    }
                }
            }
        });
    }

    /// Resolves `id` or `id@version`.
    pub async fn resolve(&self, op: &str) -> Result<Arc<OperatorDef>, ErrorReply> {
        let (id, version) = split_operator_ref(op);
        let def = self.lookup(id).await?;
        if let Some(v) = version {
            if v != def.version {
                return Err(ErrorReply::new(
                    ErrorCode::UnknownOperator,
                    format!("operator `{id}` is at version {}, the job asks for {v}", def.version),
                ));
            }
        }
        Ok(def)
    }

    async fn lookup(&self, id: &str) -> Result<Arc<OperatorDef>, ErrorReply> {
        if let Some(def) = self.loaded.read().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(def.clone());
        }
        let def = match hsync_operators::find(id) {
            Some(b) => Some(b.def.clone()),
            None => self.load_from_bucket(id).await?,
        };
        let def = def.ok_or_else(|| {
            ErrorReply::new(ErrorCode::UnknownOperator, format!("no operator `{id}` is registered"))
        })?;
        if matches!(def.provider, Provider::Builtin) && hsync_operators::find(id).is_none() {
            return Err(ErrorReply::new(
                ErrorCode::UnknownOperator,
                format!("operator `{id}` claims to be built in, but this runner has no such built-in"),
            ));
        }
        let def = Arc::new(def);
        self.loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), def.clone());
        Ok(def)
    }

    async fn load_from_bucket(&self, id: &str) -> Result<Option<OperatorDef>, ErrorReply> {
        let Some(kv) = &self.kv else { return Ok(None) };
        // KV keys allow a limited alphabet; anything else cannot be registered anyway.
        if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=".contains(&b)) {
            return Ok(None);
        }
        match kv.get(id).await {
            Ok(Some(bytes)) => self.codec.decode(None, &bytes).map(Some).map_err(|e| {
                ErrorReply::new(ErrorCode::Internal, format!("operator `{id}` has a bad definition: {e}"))
            }),
            Ok(None) => Ok(None),
            Err(e) => Err(ErrorReply::new(
                ErrorCode::Unavailable,
                format!("cannot read the operator registry: {e}"),
            )),
        }
    }

    /// Every definition in the bucket (for listing).
    pub async fn list(&self) -> anyhow::Result<Vec<OperatorDef>> {
        let Some(kv) = &self.kv else {
            return Ok(hsync_operators::catalogue().iter().map(|b| b.def.clone()).collect());
        };
        let mut keys = kv.keys().await?;
        let mut out = Vec::new();
        while let Some(Ok(key)) = keys.next().await {
            if let Ok(Some(bytes)) = kv.get(&key).await {
                if let Ok(def) = self.codec.decode::<OperatorDef>(None, &bytes) {
                    out.push(def);
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
