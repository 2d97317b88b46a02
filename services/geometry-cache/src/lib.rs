//! geometry-cache: serves the `geo.*` operators on `hsync.op.geo.*`, each behind an LRU
//! cache keyed by the canonical hash of its arguments, and registers their definitions
//! in the operator registry like any other provider.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hsync_bus::{serve, start_service, Bus, Incoming, ServeOptions, ShutdownSignal};
use hsync_geometry::PoincareBall;
use hsync_operators::{canonical_hash, Args};
use hsync_protocol::names::services;
use hsync_protocol::operator::{
    ArgKind, ArgSpec, OperatorBatch, OperatorBatchReply, OperatorCall, OperatorDef, OperatorOutput, OperatorResult, Provider,
    MAX_OPERATOR_BATCH,
};
use hsync_protocol::{ErrorCode, ErrorReply, Names, Tensor, Value};
use lru::LruCache;

pub const VERSION: &str = "1";
/// Most points a geodesic may be asked for.
pub const MAX_GEODESIC_POINTS: i64 = 10_000;
/// Largest dimension accepted.
pub const MAX_DIMENSION: usize = 65_536;

/// One operator served by this service.
struct GeoOp {
    id: &'static str,
    description: &'static str,
    args: &'static [(&'static str, ArgKind, bool)],
    run: fn(&Args) -> Result<Value, ErrorReply>,
}

const OPS: &[GeoOp] = &[
    GeoOp {
        id: "geo.poincare.distance",
        description: "geodesic distance between two points of the Poincaré ball of curvature -c",
        args: &[("x", ArgKind::Vector, true), ("y", ArgKind::Vector, true), ("c", ArgKind::Number, false)],
        run: poincare_distance,
    },
    GeoOp {
        id: "geo.geodesic",
        description: "n points evenly spaced along the geodesic from x to y in the Poincaré ball",
        args: &[
            ("x", ArgKind::Vector, true),
            ("y", ArgKind::Vector, true),
            ("n", ArgKind::Integer, false),
            ("c", ArgKind::Number, false),
        ],
        run: geodesic,
    },
];

fn invalid(arg: &str, msg: impl std::fmt::Display) -> ErrorReply {
    ErrorReply::new(ErrorCode::InvalidArgument, format!("argument `{arg}`: {msg}")).at_argument(arg)
}

fn point(args: &Args, name: &str) -> Result<Vec<f64>, ErrorReply> {
    let v = args.get(name).ok_or_else(|| invalid(name, "missing"))?;
    let p = v
        .as_vector()
        .ok_or_else(|| invalid(name, format!("expected a vector of numbers, found {}", v.type_name())))?;
    if p.len() > MAX_DIMENSION {
        return Err(invalid(name, format!("dimension {} exceeds {MAX_DIMENSION}", p.len())));
    }
    Ok(p)
}

fn ball(args: &Args) -> Result<PoincareBall, ErrorReply> {
    let c = match args.get("c") {
        None => 1.0,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| invalid("c", format!("expected a number, found {}", v.type_name())))?,
    };
    PoincareBall::new(c).map_err(|e| invalid("c", e))
}

fn geometry_error(e: hsync_geometry::GeometryError) -> ErrorReply {
    ErrorReply::new(ErrorCode::InvalidArgument, e.to_string())
}

fn poincare_distance(args: &Args) -> Result<Value, ErrorReply> {
    let (x, y) = (point(args, "x")?, point(args, "y")?);
    ball(args)?.distance(&x, &y).map(Value::Float).map_err(geometry_error)
}

fn geodesic(args: &Args) -> Result<Value, ErrorReply> {
    let (x, y) = (point(args, "x")?, point(args, "y")?);
    let n = match args.get("n") {
        None => 10,
        Some(v) => v.as_i64().ok_or_else(|| invalid("n", format!("expected an integer, found {}", v.type_name())))?,
    };
    if !(2..=MAX_GEODESIC_POINTS).contains(&n) {
        return Err(invalid("n", format!("must be between 2 and {MAX_GEODESIC_POINTS}, found {n}")));
    }
    let points = ball(args)?.geodesic(&x, &y, n as usize).map_err(geometry_error)?;
    let dim = x.len();
    let data: Vec<f64> = points.into_iter().flatten().collect();
    Tensor::matrix(n as usize, dim, data)
        .map(Value::Tensor)
        .map_err(|e| ErrorReply::new(ErrorCode::Internal, e))
}

/// Operator definitions this service provides, for the registry.
pub fn definitions(names: &Names) -> Vec<OperatorDef> {
    OPS.iter()
        .map(|op| OperatorDef {
            id: op.id.to_string(),
            version: VERSION.to_string(),
            capabilities: vec!["geometry".to_string(), "hyperbolic".to_string()],
            deterministic: true,
            cacheable: true,
            provider: Provider::Nats {
                subject: names.operator(op.id),
                batch_subject: Some(names.operator_batch(op.id)),
            },
            args: op
                .args
                .iter()
                .map(|(n, k, r)| ArgSpec {
                    name: n.to_string(),
                    kind: *k,
                    required: *r,
                })
                .collect(),
            cost_hint: 2,
            description: op.description.to_string(),
        })
        .collect()
}

/// One LRU cache per operator, bounded by entries and by bytes, with counters.
///
/// The byte bound matters: one geodesic may be 10,000 points of dimension 65,536, so an
/// entry count alone would let a handful of hostile requests hold gigabytes.
pub struct GeoCache {
    cache: Option<Mutex<Bounded>>,
    max_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    /// Results larger than the whole byte budget, served but not kept.
    too_large: AtomicU64,
}

struct Bounded {
    lru: LruCache<[u8; 32], Value>,
    bytes: usize,
}

impl GeoCache {
    /// `capacity` entries and `max_bytes` (by `Value::approx_size`); either 0 turns the
    /// cache off.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        GeoCache {
            cache: NonZeroUsize::new(capacity)
                .filter(|_| max_bytes > 0)
                .map(|n| Mutex::new(Bounded { lru: LruCache::new(n), bytes: 0 })),
            max_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
        }
    }

    /// Serves from the cache, or computes and remembers. Errors are not cached.
    pub fn get_or_compute(&self, args: &Args, f: impl FnOnce(&Args) -> Result<Value, ErrorReply>) -> Result<(Value, bool), ErrorReply> {
        let Some(cache) = &self.cache else {
            return f(args).map(|v| (v, false));
        };
        let key = canonical_hash(args);
        if let Some(v) = cache.lock().unwrap_or_else(|p| p.into_inner()).lru.get(&key).cloned() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((v, true));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let v = f(args)?;
        let size = v.approx_size();
        if size > self.max_bytes {
            self.too_large.fetch_add(1, Ordering::Relaxed);
            return Ok((v, false));
        }
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((old_key, old)) = c.lru.push(key, v.clone()) {
            c.bytes -= old.approx_size();
            if old_key != key {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        c.bytes += size;
        while c.bytes > self.max_bytes {
            let Some((_, old)) = c.lru.pop_lru() else { break };
            c.bytes -= old.approx_size();
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        Ok((v, false))
    }

    pub fn stats_json(&self) -> serde_json::Value {
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        serde_json::json!({
            "cache_hits": hits,
            "cache_misses": misses,
            "cache_hit_rate": if hits + misses > 0 { hits as f64 / (hits + misses) as f64 } else { 0.0 },
            "cache_entries": self.cache.as_ref().map(|c| c.lock().map(|c| c.lru.len()).unwrap_or(0)).unwrap_or(0),
            "cache_bytes": self.cache.as_ref().map(|c| c.lock().map(|c| c.bytes).unwrap_or(0)).unwrap_or(0),
            "cache_evictions": self.evictions.load(Ordering::Relaxed),
            "cache_too_large": self.too_large.load(Ordering::Relaxed),
        })
    }
}

/// Runs one call of operator `OPS[i]` through its cache.
fn serve_call(cache: &GeoCache, i: usize, call: &OperatorCall) -> Result<OperatorOutput, ErrorReply> {
    let op = &OPS[i];
    if call.operator != op.id {
        return Err(ErrorReply::new(
            ErrorCode::InvalidArgument,
            format!("this subject serves `{}`, the call names `{}`", op.id, call.operator),
        ));
    }
    let (output, cached) = cache.get_or_compute(&call.args, op.run)?;
    Ok(OperatorOutput { output, cached })
}

/// Serves every operator, one call at a time and in batches, until shutdown (the binary
/// registers [`definitions`] first).
pub async fn run(bus: Arc<Bus>, cache_entries: usize, cache_bytes: usize, shutdown: ShutdownSignal) -> anyhow::Result<()> {
    let caches: Arc<Vec<GeoCache>> = Arc::new(OPS.iter().map(|_| GeoCache::new(cache_entries, cache_bytes)).collect());
    let stats_caches = caches.clone();
    let service = start_service(
        &bus,
        services::GEOMETRY_CACHE,
        "hyperbolic geometry operators (Poincaré ball) behind LRU caches",
        move |endpoint| {
            OPS.iter()
                .position(|op| op.id == endpoint.strip_suffix(".batch").unwrap_or(endpoint))
                .map(|i| stats_caches[i].stats_json())
                .unwrap_or(serde_json::Value::Null)
        },
    )
    .await?;
    let mut tasks = Vec::new();
    for (i, op) in OPS.iter().enumerate() {
        let endpoint = service
            .endpoint_builder()
            .name(op.id)
            .add(bus.names().operator(op.id))
            .await
            .map_err(|e| anyhow::anyhow!("cannot add endpoint {}: {e}", op.id))?;
        let call_caches = caches.clone();
        tasks.push(tokio::spawn(serve(
            bus.clone(),
            endpoint,
            shutdown.clone(),
            ServeOptions::default(),
            move |req: Incoming<OperatorCall>| {
                let caches = call_caches.clone();
                async move {
                    let call = req.body;
                    let span = tracing::Span::current();
                    span.record("hsync.job_id", call.job_id.as_str());
                    span.record("hsync.node_id", call.node_id.as_str());
                    span.record("hsync.operator", OPS[i].id);
                    let out = tokio::task::spawn_blocking(move || serve_call(&caches[i], i, &call))
                        .await
                        .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("geometry task: {e}")))??;
                    span.record("hsync.cache_hit", out.cached);
                    Ok(out)
                }
            },
        )));
        let batch_name = format!("{}.batch", op.id);
        let endpoint = service
            .endpoint_builder()
            .name(&batch_name)
            .add(bus.names().operator_batch(op.id))
            .await
            .map_err(|e| anyhow::anyhow!("cannot add endpoint {batch_name}: {e}"))?;
        let caches = caches.clone();
        tasks.push(tokio::spawn(serve(
            bus.clone(),
            endpoint,
            shutdown.clone(),
            ServeOptions::default(),
            move |req: Incoming<OperatorBatch>| {
                let caches = caches.clone();
                async move {
                    let calls = req.body.calls;
                    if calls.len() > MAX_OPERATOR_BATCH {
                        return Err(ErrorReply::new(
                            ErrorCode::InvalidArgument,
                            format!("a batch holds at most {MAX_OPERATOR_BATCH} calls, this one {}", calls.len()),
                        ));
                    }
                    tracing::Span::current().record("hsync.operator", OPS[i].id);
                    // One blocking task for the whole batch: that is the saving batching buys.
                    let results = tokio::task::spawn_blocking(move || {
                        calls
                            .iter()
                            .map(|call| OperatorResult::from_result(serve_call(&caches[i], i, call)))
                            .collect()
                    })
                    .await
                    .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("geometry task: {e}")))?;
                    Ok(OperatorBatchReply { results })
                }
            },
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = service.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, Value)]) -> Args {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn distance_from_origin_matches_closed_form() {
        let a = args(&[("x", Value::Tensor(Tensor::vector(vec![0.0, 0.0]))), ("y", Value::Tensor(Tensor::vector(vec![0.5, 0.0])))]);
        let Value::Float(d) = poincare_distance(&a).unwrap() else { panic!("not a float") };
        // d(0, r) = 2 artanh(r) for c = 1
        assert!((d - 2.0 * 0.5f64.atanh()).abs() < 1e-12, "{d}");
    }

    #[test]
    fn cache_serves_repeats_and_counts() {
        let cache = GeoCache::new(10, 1 << 20);
        let a = args(&[("x", Value::Tensor(Tensor::vector(vec![0.1]))), ("y", Value::Tensor(Tensor::vector(vec![0.2])))]);
        let (v1, hit1) = cache.get_or_compute(&a, poincare_distance).unwrap();
        let (v2, hit2) = cache.get_or_compute(&a, poincare_distance).unwrap();
        assert_eq!(v1, v2);
        assert!(!hit1 && hit2);
        assert_eq!(cache.stats_json()["cache_hits"], 1);
    }

    #[test]
    fn bad_arguments_are_named() {
        let a = args(&[("x", Value::Tensor(Tensor::vector(vec![2.0]))), ("y", Value::Tensor(Tensor::vector(vec![0.2])))]);
        assert_eq!(poincare_distance(&a).unwrap_err().code, ErrorCode::InvalidArgument);
        let a = args(&[
            ("x", Value::Tensor(Tensor::vector(vec![0.1]))),
            ("y", Value::Tensor(Tensor::vector(vec![0.2]))),
            ("n", Value::Int(1)),
        ]);
        assert_eq!(geodesic(&a).unwrap_err().argument.as_deref(), Some("n"));
    }

    #[test]
    fn the_byte_bound_evicts_and_refuses_what_cannot_fit() {
        // Geodesics of 100 points in 8 dimensions are ~6.4 kB each; allow ~3 of them.
        let cache = GeoCache::new(1000, 20_000);
        for i in 0..10 {
            let a = args(&[
                ("x", Value::Tensor(Tensor::vector(vec![0.01 * i as f64; 8]))),
                ("y", Value::Tensor(Tensor::vector(vec![-0.05; 8]))),
                ("n", Value::Int(100)),
            ]);
            cache.get_or_compute(&a, geodesic).unwrap();
            let st = cache.stats_json();
            assert!(st["cache_bytes"].as_u64().unwrap() <= 20_000, "{st}");
        }
        let st = cache.stats_json();
        assert!(st["cache_evictions"].as_u64().unwrap() >= 6, "{st}");
        assert!(st["cache_entries"].as_u64().unwrap() >= 2, "{st}");
        // One result bigger than the whole budget is served, not kept.
        let huge = args(&[
            ("x", Value::Tensor(Tensor::vector(vec![0.0; 64]))),
            ("y", Value::Tensor(Tensor::vector(vec![0.01; 64]))),
            ("n", Value::Int(1000)),
        ]);
        let (_, hit) = cache.get_or_compute(&huge, geodesic).unwrap();
        assert!(!hit);
        assert_eq!(cache.stats_json()["cache_too_large"], 1);
        assert!(!cache.get_or_compute(&huge, geodesic).unwrap().1, "not kept, so not a hit");
    }
}
