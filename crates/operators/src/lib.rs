//! Built-in operators: deterministic, bit-exact from run to run, CPU-bound.
//!
//! Each operator is an [`OperatorDef`] (what the registry and policies see) plus a plain
//! function over already-resolved arguments. Argument errors name the argument and say
//! what was expected and what was found.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::OnceLock;

use hsync_protocol::operator::{ArgKind, ArgSpec, OperatorDef, Provider};
use hsync_protocol::{ErrorCode, ErrorReply, Tensor, Value};

mod graph;

/// Resolved arguments of one invocation.
pub type Args = BTreeMap<String, Value>;
pub type OperatorFn = fn(&Args) -> Result<Value, ErrorReply>;

pub struct Builtin {
    pub def: OperatorDef,
    pub run: OperatorFn,
}

/// Version of every built-in; bump when an operator's output changes.
pub const BUILTIN_VERSION: &str = "1";

fn def(id: &str, caps: &[&str], args: &[(&str, ArgKind)], description: &str) -> OperatorDef {
    OperatorDef {
        id: id.to_string(),
        version: BUILTIN_VERSION.to_string(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        deterministic: true,
        cacheable: true,
        provider: Provider::Builtin,
        args: args
            .iter()
            .map(|(n, k)| ArgSpec {
                name: n.to_string(),
                kind: *k,
                required: true,
            })
            .collect(),
        cost_hint: 1,
        description: description.to_string(),
    }
}

/// Marks the named arguments of a definition optional.
fn optional(mut d: OperatorDef, names: &[&str]) -> OperatorDef {
    for a in &mut d.args {
        if names.contains(&a.name.as_str()) {
            a.required = false;
        }
    }
    d
}

/// The whole built-in catalogue.
pub fn catalogue() -> &'static [Builtin] {
    static CATALOGUE: OnceLock<Vec<Builtin>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        use ArgKind::*;
        vec![
            Builtin { def: def("const", &["data"], &[("value", Any)], "returns its argument"), run: op_const },
            Builtin { def: def("vec.add", &["math"], &[("a", Vector), ("b", Vector)], "element-wise sum"), run: vec_add },
            Builtin { def: def("vec.scale", &["math"], &[("v", Vector), ("k", Number)], "multiplies a vector by a number"), run: vec_scale },
            Builtin { def: def("vec.dot", &["math"], &[("a", Vector), ("b", Vector)], "dot product"), run: vec_dot },
            Builtin { def: def("vec.norm", &["math"], &[("v", Vector)], "Euclidean norm"), run: vec_norm },
            Builtin { def: def("mat.matmul", &["math"], &[("a", Matrix), ("b", Matrix)], "matrix product"), run: mat_matmul },
            Builtin { def: def("stats.mean", &["statistics"], &[("x", Vector)], "arithmetic mean"), run: stats_mean },
            Builtin { def: def("stats.variance", &["statistics"], &[("x", Vector)], "sample variance (n - 1)"), run: stats_variance },
            Builtin { def: def("data.hash", &["data"], &[("value", Any)], "SHA-256 of the canonical encoding, hex"), run: data_hash },
            Builtin { def: def("stats.quantiles", &["statistics"], &[("v", Vector), ("q", Vector)], "quantiles at probabilities `q`, linear interpolation (numpy's default, type 7)"), run: stats_quantiles },
            Builtin { def: optional(def("data.compress", &["data", "compression"], &[("data", Any), ("level", Integer)], "zstd-compresses bytes or a string (`level` 1..=19, default 3)"), &["level"]), run: data_compress },
            Builtin { def: def("data.decompress", &["data", "compression"], &[("data", Bytes)], "decompresses zstd bytes (at most 64 MiB of output)"), run: data_decompress },
            Builtin { def: optional(def("graph.toposort", &["graph"], &[("edges", Any), ("nodes", Any)], "topological order of [from, to] edges, smallest name first among ready nodes"), &["nodes"]), run: graph::toposort },
            Builtin { def: def("graph.shortest_path", &["graph"], &[("edges", Any), ("from", Any), ("to", Any)], "Dijkstra over directed [from, to, weight] edges: {path, distance}"), run: graph::shortest_path },
        ]
    })
}

/// Looks a built-in up by id.
pub fn find(id: &str) -> Option<&'static Builtin> {
    catalogue().iter().find(|b| b.def.id == id)
}

/// Checks a value against an argument kind; `None` when it fits.
pub fn kind_mismatch(kind: ArgKind, v: &Value) -> Option<String> {
    let ok = match kind {
        ArgKind::Any => true,
        ArgKind::Number => v.as_f64().is_some(),
        ArgKind::Integer => v.as_i64().is_some(),
        ArgKind::String => matches!(v, Value::Str(_)),
        ArgKind::Bytes => matches!(v, Value::Bytes(_)),
        ArgKind::Vector => v.as_vector().is_some(),
        ArgKind::Matrix | ArgKind::Points => v.as_matrix().is_some(),
        ArgKind::Numbers => v.as_vector().is_some(),
        ArgKind::Edges => v.as_matrix().is_some_and(|(rows, cols, data)| {
            (rows == 0 || cols == 2) && data.iter().all(|x| x.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(x))
        }),
    };
    (!ok).then(|| format!("expected {}, found {}", kind_name(kind), v.type_name()))
}

fn kind_name(kind: ArgKind) -> &'static str {
    match kind {
        ArgKind::Any => "any value",
        ArgKind::Number => "a number",
        ArgKind::Integer => "an integer",
        ArgKind::String => "a string",
        ArgKind::Bytes => "bytes",
        ArgKind::Vector => "a vector of numbers",
        ArgKind::Matrix => "a matrix (array of equally long rows of numbers)",
        ArgKind::Points => "a list of points (equally long vectors)",
        ArgKind::Numbers => "a vector of numbers",
        ArgKind::Edges => "a list of [u, v] pairs of node indices (integers from 0 to 2^32 - 1)",
    }
}

fn invalid(arg: &str, msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::InvalidArgument, format!("argument `{arg}`: {}", msg.into())).at_argument(arg)
}

fn get<'a>(args: &'a Args, name: &str) -> Result<&'a Value, ErrorReply> {
    args.get(name).ok_or_else(|| invalid(name, "missing"))
}

fn vector(args: &Args, name: &str) -> Result<Vec<f64>, ErrorReply> {
    let v = get(args, name)?;
    let x = v
        .as_vector()
        .ok_or_else(|| invalid(name, format!("expected a vector of numbers, found {}", v.type_name())))?;
    if let Some(i) = x.iter().position(|f| !f.is_finite()) {
        return Err(invalid(name, format!("element {i} is not a finite number")));
    }
    Ok(x)
}

fn number(args: &Args, name: &str) -> Result<f64, ErrorReply> {
    let v = get(args, name)?;
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        Some(_) => Err(invalid(name, "must be finite")),
        None => Err(invalid(name, format!("expected a number, found {}", v.type_name()))),
    }
}

fn same_len(a: &[f64], b: &[f64]) -> Result<(), ErrorReply> {
    if a.len() != b.len() {
        return Err(invalid("b", format!("length {} differs from `a`'s length {}", b.len(), a.len())));
    }
    Ok(())
}

fn op_const(args: &Args) -> Result<Value, ErrorReply> {
    get(args, "value").cloned()
}

fn vec_add(args: &Args) -> Result<Value, ErrorReply> {
    let (a, b) = (vector(args, "a")?, vector(args, "b")?);
    same_len(&a, &b)?;
    Ok(Tensor::vector(a.iter().zip(&b).map(|(x, y)| x + y).collect()).into())
}

fn vec_scale(args: &Args) -> Result<Value, ErrorReply> {
    let (v, k) = (vector(args, "v")?, number(args, "k")?);
    Ok(Tensor::vector(v.iter().map(|x| x * k).collect()).into())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Sequential summation keeps the result bit-exact from run to run.
    a.iter().zip(b).fold(0.0, |acc, (x, y)| acc + x * y)
}

fn vec_dot(args: &Args) -> Result<Value, ErrorReply> {
    let (a, b) = (vector(args, "a")?, vector(args, "b")?);
    same_len(&a, &b)?;
    Ok(Value::Float(dot(&a, &b)))
}

fn vec_norm(args: &Args) -> Result<Value, ErrorReply> {
    let v = vector(args, "v")?;
    Ok(Value::Float(dot(&v, &v).sqrt()))
}

/// Largest matrix side accepted, so a hostile job cannot ask for a huge allocation.
const MAX_MATRIX_ELEMENTS: usize = 16 * 1024 * 1024;

fn matrix(args: &Args, name: &str) -> Result<(usize, usize, Vec<f64>), ErrorReply> {
    let v = get(args, name)?;
    let m = v
        .as_matrix()
        .ok_or_else(|| invalid(name, format!("expected a matrix, found {}", v.type_name())))?;
    if m.2.iter().any(|x| !x.is_finite()) {
        return Err(invalid(name, "all elements must be finite"));
    }
    Ok(m)
}

fn mat_matmul(args: &Args) -> Result<Value, ErrorReply> {
    let (n, k, a) = matrix(args, "a")?;
    let (k2, m, b) = matrix(args, "b")?;
    if k != k2 {
        return Err(invalid("b", format!("has {k2} rows but `a` has {k} columns")));
    }
    if n.saturating_mul(m) > MAX_MATRIX_ELEMENTS {
        return Err(invalid("b", format!("result {n}x{m} is too large")));
    }
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for p in 0..k {
            let aip = a[i * k + p];
            for j in 0..m {
                out[i * m + j] += aip * b[p * m + j];
            }
        }
    }
    Tensor::matrix(n, m, out)
        .map(Value::Tensor)
        .map_err(|e| ErrorReply::new(ErrorCode::Internal, e))
}

fn stats_mean(args: &Args) -> Result<Value, ErrorReply> {
    let x = vector(args, "x")?;
    if x.is_empty() {
        return Err(invalid("x", "must not be empty"));
    }
    Ok(Value::Float(x.iter().sum::<f64>() / x.len() as f64))
}

fn stats_variance(args: &Args) -> Result<Value, ErrorReply> {
    let x = vector(args, "x")?;
    if x.len() < 2 {
        return Err(invalid("x", "needs at least two elements"));
    }
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    let ss: f64 = x.iter().map(|v| (v - mean) * (v - mean)).sum();
    Ok(Value::Float(ss / (x.len() - 1) as f64))
}

fn stats_quantiles(args: &Args) -> Result<Value, ErrorReply> {
    let mut v = vector(args, "v")?;
    if v.is_empty() {
        return Err(invalid("v", "must not be empty"));
    }
    let q = vector(args, "q")?;
    if let Some(i) = q.iter().position(|p| !(0.0..=1.0).contains(p)) {
        return Err(invalid(
            "q",
            format!("element {i} ({}) is not a probability in [0, 1]", q[i]),
        ));
    }
    // All elements are finite, so the total order is the numeric one (with -0 before +0).
    v.sort_unstable_by(f64::total_cmp);
    Ok(Tensor::vector(q.iter().map(|&p| quantile_sorted(&v, p)).collect()).into())
}

/// Quantile `p` of sorted, finite, non-empty `x`, the way numpy's `linear` method computes it.
fn quantile_sorted(x: &[f64], p: f64) -> f64 {
    let last = x.len() - 1;
    let h = last as f64 * p;
    let lo = h.floor();
    let i = (lo as usize).min(last);
    let j = (i + 1).min(last);
    lerp(x[i], x[j], h - lo)
}

/// numpy's `_lerp`: interpolates from the nearer end so that `t = 1` gives `b` exactly.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    if t == 0.0 || a == b {
        return a;
    }
    let d = b - a;
    let r = if t >= 0.5 { b - d * (1.0 - t) } else { a + d * t };
    // `b - a` overflows for finite values of opposite sign near the f64 limits.
    if r.is_finite() {
        r
    } else {
        a * (1.0 - t) + b * t
    }
}

/// Most bytes `data.compress` accepts and `data.decompress` produces.
pub const MAX_DATA_BYTES: usize = 64 * 1024 * 1024;
const DEFAULT_ZSTD_LEVEL: i64 = 3;
/// Largest zstd window (log2) accepted when decompressing: 16 MiB, above the 8 MiB that
/// levels up to 19 use, so a tiny hostile frame cannot make the decoder reserve 128 MiB+.
const MAX_ZSTD_WINDOW_LOG: u32 = 24;

fn data_compress(args: &Args) -> Result<Value, ErrorReply> {
    let data: &[u8] = match get(args, "data")? {
        Value::Bytes(b) => b,
        Value::Str(s) => s.as_bytes(),
        other => {
            return Err(invalid(
                "data",
                format!("expected bytes or a string, found {}", other.type_name()),
            ))
        }
    };
    if data.len() > MAX_DATA_BYTES {
        return Err(invalid(
            "data",
            format!("{} bytes is more than the limit of {MAX_DATA_BYTES}", data.len()),
        ));
    }
    let level = match args.get("level") {
        None => DEFAULT_ZSTD_LEVEL,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| invalid("level", format!("expected an integer, found {}", v.type_name())))?,
    };
    if !(1..=19).contains(&level) {
        return Err(invalid("level", format!("{level} is outside 1..=19")));
    }
    // Single-threaded, no dictionary: the frame depends only on the input, the level and
    // the zstd library version (bump BUILTIN_VERSION when upgrading zstd changes it).
    zstd::bulk::compress(data, level as i32)
        .map(Value::Bytes)
        .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("zstd: {e}")))
}

fn data_decompress(args: &Args) -> Result<Value, ErrorReply> {
    let v = get(args, "data")?;
    let Value::Bytes(data) = v else {
        return Err(invalid("data", format!("expected bytes, found {}", v.type_name())));
    };
    if data.is_empty() {
        return Err(invalid("data", "is empty, not zstd data"));
    }
    let too_large = || {
        invalid(
            "data",
            format!("decompresses to more than the limit of {MAX_DATA_BYTES} bytes"),
        )
    };
    let malformed = |e: std::io::Error| invalid("data", format!("is not valid zstd data: {e}"));
    // The first frame's header may declare its size: refuse a bomb before decoding it.
    let declared = match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(n)) if n > MAX_DATA_BYTES as u64 => return Err(too_large()),
        Ok(Some(n)) => n as usize,
        Ok(None) => 0,
        Err(_) => return Err(invalid("data", "is not valid zstd data: no zstd frame header")),
    };
    let internal = |e: std::io::Error| ErrorReply::new(ErrorCode::Internal, format!("zstd: {e}"));
    let mut decoder = zstd::stream::read::Decoder::with_buffer(&data[..]).map_err(internal)?;
    decoder.window_log_max(MAX_ZSTD_WINDOW_LOG).map_err(internal)?;
    let mut out = Vec::with_capacity(declared);
    // Read one byte past the limit to tell "exactly at the limit" from "over it".
    decoder
        .take(MAX_DATA_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(malformed)?;
    if out.len() > MAX_DATA_BYTES {
        return Err(too_large());
    }
    Ok(Value::Bytes(out))
}

/// SHA-256 over the canonical encoding (MessagePack, named fields, sorted map keys).
pub fn canonical_hash<T: serde_like::Canonical + ?Sized>(v: &T) -> [u8; 32] {
    let bytes = v.canonical_bytes();
    let d = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Types with a canonical byte encoding.
pub mod serde_like {
    use super::*;
    pub trait Canonical {
        fn canonical_bytes(&self) -> Vec<u8>;
    }
    impl Canonical for Value {
        fn canonical_bytes(&self) -> Vec<u8> {
            rmp_serde::to_vec_named(self).unwrap_or_default()
        }
    }
    impl Canonical for Args {
        fn canonical_bytes(&self) -> Vec<u8> {
            rmp_serde::to_vec_named(self).unwrap_or_default()
        }
    }
}

fn data_hash(args: &Args) -> Result<Value, ErrorReply> {
    Ok(Value::Str(hex::encode(canonical_hash(get(args, "value")?))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, Value)]) -> Args {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn edges_are_pairs_of_node_indices() {
        let pair = |u: Value, v: Value| Value::Array(vec![u, v]);
        let ok = Value::Array(vec![pair(Value::Int(0), Value::Int(1)), pair(Value::Float(1.0), Value::Int(2))]);
        assert_eq!(kind_mismatch(ArgKind::Edges, &ok), None);
        assert_eq!(kind_mismatch(ArgKind::Edges, &Value::Array(vec![])), None);
        for bad in [
            Value::Array(vec![pair(Value::Int(0), Value::Int(-1))]),
            Value::Array(vec![pair(Value::Int(0), Value::Float(1.5))]),
            Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(1), Value::Int(2)])]),
            Value::Str("0 1".into()),
        ] {
            let msg = kind_mismatch(ArgKind::Edges, &bad).expect("rejected");
            assert!(msg.contains("pairs of node indices"), "{msg}");
        }
        assert_eq!(kind_mismatch(ArgKind::Numbers, &vecv(&[3.0, 4.0])), None);
        assert!(kind_mismatch(ArgKind::Numbers, &Value::Str("x".into())).is_some());
    }

    fn vecv(x: &[f64]) -> Value {
        Value::Tensor(Tensor::vector(x.to_vec()))
    }

    #[test]
    fn vector_math() {
        let a = args(&[("a", vecv(&[1.0, 2.0])), ("b", vecv(&[3.0, 4.5]))]);
        assert_eq!((find("vec.add").unwrap().run)(&a).unwrap(), vecv(&[4.0, 6.5]));
        assert_eq!((find("vec.dot").unwrap().run)(&a).unwrap(), Value::Float(12.0));
        let n = args(&[("v", vecv(&[3.0, 4.0]))]);
        assert_eq!((find("vec.norm").unwrap().run)(&n).unwrap(), Value::Float(5.0));
    }

    #[test]
    fn matmul_checks_shapes() {
        let a = Value::Tensor(Tensor::matrix(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap());
        let b = Value::Tensor(Tensor::matrix(2, 1, vec![1.0, 1.0]).unwrap());
        let out = mat_matmul(&args(&[("a", a.clone()), ("b", b)])).unwrap();
        assert_eq!(out.as_matrix(), Some((2, 1, vec![3.0, 7.0])));
        let bad = Value::Tensor(Tensor::matrix(3, 1, vec![1.0; 3]).unwrap());
        let err = mat_matmul(&args(&[("a", a), ("b", bad)])).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert_eq!(err.argument.as_deref(), Some("b"));
    }

    #[test]
    fn wrong_types_name_the_argument() {
        let err = vec_add(&args(&[("a", Value::Str("x".into())), ("b", vecv(&[1.0]))])).unwrap_err();
        assert!(err.message.contains("argument `a`"), "{}", err.message);
        assert!(err.message.contains("found string"), "{}", err.message);
        let err = stats_variance(&args(&[("x", vecv(&[1.0]))])).unwrap_err();
        assert!(err.message.contains("at least two"));
    }

    #[test]
    fn statistics() {
        let x = args(&[("x", vecv(&[1.0, 2.0, 3.0, 4.0]))]);
        assert_eq!(stats_mean(&x).unwrap(), Value::Float(2.5));
        assert_eq!(stats_variance(&x).unwrap(), Value::Float(5.0 / 3.0));
    }

    #[test]
    fn canonical_hash_is_stable_and_order_independent() {
        let a = args(&[("x", Value::Int(1)), ("y", Value::Int(2))]);
        let mut b = Args::new();
        b.insert("y".into(), Value::Int(2));
        b.insert("x".into(), Value::Int(1));
        assert_eq!(canonical_hash(&a), canonical_hash(&b));
        assert_ne!(canonical_hash(&a), canonical_hash(&args(&[("x", Value::Int(2))])));
    }

    #[test]
    fn quantiles_known_answers() {
        let a = args(&[("v", vecv(&[4.0, 1.0, 3.0, 2.0])), ("q", vecv(&[0.0, 0.5, 1.0]))]);
        assert_eq!(stats_quantiles(&a).unwrap(), vecv(&[1.0, 2.5, 4.0]));
        // numpy.quantile([1, 2, 3, 4, 10], [0.1, 0.25, 0.75, 0.9]) = [1.4, 2.0, 4.0, 7.6]
        let a = args(&[
            ("v", vecv(&[10.0, 1.0, 2.0, 3.0, 4.0])),
            ("q", vecv(&[0.1, 0.25, 0.75, 0.9])),
        ]);
        let out = stats_quantiles(&a).unwrap().as_vector().unwrap();
        let want = [1.4, 2.0, 4.0, 7.6];
        assert!(out.iter().zip(want).all(|(x, y)| (x - y).abs() < 1e-12), "{out:?}");
        // A single element, plain arrays, integers and an empty `q`.
        let a = args(&[("v", Value::Array(vec![Value::Int(7)])), ("q", vecv(&[0.0, 0.3, 1.0]))]);
        assert_eq!(stats_quantiles(&a).unwrap(), vecv(&[7.0, 7.0, 7.0]));
        let a = args(&[("v", vecv(&[1.0])), ("q", Value::Array(vec![]))]);
        assert_eq!(stats_quantiles(&a).unwrap(), vecv(&[]));
        // Extremes of opposite sign do not overflow into infinity or NaN.
        let a = args(&[("v", vecv(&[-f64::MAX, f64::MAX])), ("q", vecv(&[0.25, 0.5, 0.75]))]);
        let out = stats_quantiles(&a).unwrap().as_vector().unwrap();
        assert!(out.iter().all(|x| x.is_finite()), "{out:?}");
        assert_eq!(out[1], 0.0);
    }

    #[test]
    fn quantiles_reject_bad_arguments() {
        let cases = [
            (vecv(&[]), vecv(&[0.5]), "v", "must not be empty"),
            (
                vecv(&[1.0, f64::NAN]),
                vecv(&[0.5]),
                "v",
                "element 1 is not a finite number",
            ),
            (
                vecv(&[1.0, f64::INFINITY]),
                vecv(&[0.5]),
                "v",
                "element 1 is not a finite number",
            ),
            (
                vecv(&[1.0]),
                vecv(&[0.5, 1.5]),
                "q",
                "element 1 (1.5) is not a probability in [0, 1]",
            ),
            (
                vecv(&[1.0]),
                vecv(&[-0.1]),
                "q",
                "element 0 (-0.1) is not a probability",
            ),
            (vecv(&[1.0]), vecv(&[f64::NAN]), "q", "element 0 is not a finite number"),
            (vecv(&[1.0]), Value::Str("x".into()), "q", "found string"),
        ];
        for (v, q, arg, want) in cases {
            let err = stats_quantiles(&args(&[("v", v), ("q", q)])).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument);
            assert_eq!(err.argument.as_deref(), Some(arg));
            assert!(err.message.contains(want), "{} / {want}", err.message);
        }
    }

    #[test]
    fn quantiles_are_deterministic() {
        let v: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1000) as f64 / 3.0 - 100.0).collect();
        let q: Vec<f64> = (0..=100).map(|i| i as f64 / 100.0).collect();
        let a = args(&[("v", vecv(&v)), ("q", vecv(&q))]);
        let (o1, o2) = (stats_quantiles(&a).unwrap(), stats_quantiles(&a).unwrap());
        assert_eq!(canonical_hash(&o1), canonical_hash(&o2));
    }

    fn bytes(v: &Value) -> &[u8] {
        match v {
            Value::Bytes(b) => b,
            other => panic!("expected bytes, found {}", other.type_name()),
        }
    }

    #[test]
    fn compress_round_trips_and_is_deterministic() {
        let text = "the quick brown fox jumps over the lazy dog; ".repeat(200);
        let a = args(&[("data", Value::Str(text.clone()))]);
        let c1 = data_compress(&a).unwrap();
        let c2 = data_compress(&a).unwrap();
        assert_eq!(c1, c2);
        assert_eq!(canonical_hash(&c1), canonical_hash(&c2));
        assert!(bytes(&c1).len() < text.len() / 10);
        // A string and its UTF-8 bytes compress alike; the default level is 3.
        let b = args(&[
            ("data", Value::Bytes(text.clone().into_bytes())),
            ("level", Value::Int(3)),
        ]);
        assert_eq!(data_compress(&b).unwrap(), c1);
        let back = data_decompress(&args(&[("data", c1)])).unwrap();
        assert_eq!(bytes(&back), text.as_bytes());
        for level in [1, 19] {
            let a = args(&[("data", Value::Str(text.clone())), ("level", Value::Int(level))]);
            let c = data_compress(&a).unwrap();
            assert_eq!(c, data_compress(&a).unwrap());
            assert_eq!(bytes(&data_decompress(&args(&[("data", c)])).unwrap()), text.as_bytes());
        }
        let empty = data_compress(&args(&[("data", Value::Bytes(vec![]))])).unwrap();
        assert_eq!(
            data_decompress(&args(&[("data", empty)])).unwrap(),
            Value::Bytes(vec![])
        );
    }

    /// zstd output is only stable for a given library version: if this changes after a zstd
    /// upgrade, `data.compress` gives new bytes and BUILTIN_VERSION must be bumped.
    #[test]
    fn compress_output_is_pinned() {
        let a = args(&[("data", Value::Str("hello hello hello hello hello".into()))]);
        let out = data_compress(&a).unwrap();
        assert_eq!(hex::encode(bytes(&out)), PINNED_COMPRESSED);
    }
    const PINNED_COMPRESSED: &str = "28b52ffd201d6500003068656c6c6f200100a94b11";

    #[test]
    fn compress_rejects_bad_arguments() {
        let cases = [
            (
                args(&[("data", Value::Int(1))]),
                "data",
                "expected bytes or a string, found integer",
            ),
            (
                args(&[("data", Value::Str("x".into())), ("level", Value::Int(0))]),
                "level",
                "0 is outside 1..=19",
            ),
            (
                args(&[("data", Value::Str("x".into())), ("level", Value::Int(20))]),
                "level",
                "20 is outside",
            ),
            (
                args(&[("data", Value::Str("x".into())), ("level", Value::Int(-5))]),
                "level",
                "-5 is outside",
            ),
            (
                args(&[("data", Value::Str("x".into())), ("level", Value::Float(2.5))]),
                "level",
                "expected an integer, found float",
            ),
            (
                args(&[("data", Value::Str("x".into())), ("level", Value::Null)]),
                "level",
                "expected an integer, found null",
            ),
            (args(&[]), "data", "missing"),
        ];
        for (a, arg, want) in cases {
            let err = data_compress(&a).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument);
            assert_eq!(err.argument.as_deref(), Some(arg));
            assert!(err.message.contains(want), "{} / {want}", err.message);
        }
        let big = Value::Bytes(vec![0; MAX_DATA_BYTES + 1]);
        let err = data_compress(&args(&[("data", big)])).unwrap_err();
        assert!(err.message.contains("more than the limit"), "{}", err.message);
    }

    #[test]
    fn decompress_rejects_malformed_input() {
        let good = bytes(&data_compress(&args(&[("data", Value::Str("x".repeat(1000)))])).unwrap()).to_vec();
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        let mut corrupt = good.clone();
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0xff;
        corrupt[mid + 1] ^= 0x55;
        let cases = [
            Value::Bytes(vec![]),
            Value::Bytes(vec![1, 2, 3, 4, 5, 6, 7, 8]),
            Value::Bytes(good[..good.len() - 3].to_vec()),
            Value::Bytes(good[..4].to_vec()),
            Value::Bytes(trailing),
        ];
        for data in cases {
            let err = data_decompress(&args(&[("data", data.clone())])).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{data:?}");
            assert_eq!(err.argument.as_deref(), Some("data"));
            assert!(err.message.contains("zstd"), "{}", err.message);
        }
        // A corrupted body may or may not decode, but it must not panic.
        let _ = data_decompress(&args(&[("data", Value::Bytes(corrupt))]));
        let err = data_decompress(&args(&[("data", Value::Str("x".into()))])).unwrap_err();
        assert!(err.message.contains("expected bytes, found string"), "{}", err.message);
    }

    #[test]
    fn decompress_refuses_bombs() {
        use std::io::Write;
        // Declared size over the limit: refused from the frame header.
        let bomb = zstd::bulk::compress(&vec![0u8; MAX_DATA_BYTES + 1], 1).unwrap();
        assert!(bomb.len() < 64 * 1024);
        let err = data_decompress(&args(&[("data", Value::Bytes(bomb))])).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.contains("more than the limit"), "{}", err.message);
        // No declared size (streamed): refused once the output passes the limit.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        let chunk = vec![0u8; 1024 * 1024];
        for _ in 0..(MAX_DATA_BYTES / chunk.len() + 1) {
            enc.write_all(&chunk).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(matches!(zstd::zstd_safe::get_frame_content_size(&bomb), Ok(None)));
        let err = data_decompress(&args(&[("data", Value::Bytes(bomb))])).unwrap_err();
        assert!(err.message.contains("more than the limit"), "{}", err.message);
        // Many small frames that add up past the limit.
        let frame = zstd::bulk::compress(&vec![0u8; 8 * 1024 * 1024], 1).unwrap();
        let many: Vec<u8> = std::iter::repeat_n(&frame, 9).flatten().copied().collect();
        let err = data_decompress(&args(&[("data", Value::Bytes(many))])).unwrap_err();
        assert!(err.message.contains("more than the limit"), "{}", err.message);
        // A frame asking for a 128 MiB window is refused rather than allocated.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.window_log(27).unwrap();
        enc.write_all(&[7u8; 1000]).unwrap();
        let wide = enc.finish().unwrap();
        let err = data_decompress(&args(&[("data", Value::Bytes(wide))])).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.contains("too much memory"), "{}", err.message);
    }

    #[test]
    fn new_builtins_are_registered_with_optional_arguments() {
        let spec = |id: &str, arg: &str| {
            find(id)
                .unwrap()
                .def
                .args
                .iter()
                .find(|a| a.name == arg)
                .unwrap()
                .required
        };
        assert!(spec("data.compress", "data"));
        assert!(!spec("data.compress", "level"));
        assert!(spec("graph.toposort", "edges"));
        assert!(!spec("graph.toposort", "nodes"));
        assert!(spec("graph.shortest_path", "from"));
        assert!(spec("stats.quantiles", "q"));
        assert_eq!(
            find("graph.shortest_path").unwrap().def.capabilities,
            vec!["graph".to_string()]
        );
    }

    #[test]
    fn every_builtin_is_versioned_and_unique() {
        let mut ids: Vec<_> = catalogue().iter().map(|b| b.def.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), catalogue().len());
        assert!(catalogue().iter().all(|b| b.def.version == BUILTIN_VERSION));
    }
}
